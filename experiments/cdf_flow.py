"""CDF flows: 1-D and 2-D densities through the CDF of a learned mixture (course week 2).

  python experiments/cdf_flow.py --flagfile=experiments/configs/cdf_flow_toy1d.flags
  python experiments/cdf_flow.py --flagfile=experiments/configs/cdf_flow_toy2d.flags

The toy sets are continuous, so `nll` is -log p(x) of the density in nats per point
(it can be negative) and `bits_per_dim` is that over 2 ln 2 (or ln 2 in 1-D).
"""

from dulx import cli

if __name__ == '__main__':
  cli.run('cdf_flow')
