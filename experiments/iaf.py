"""IAF: inverse autoregressive flow (Kingma et al. 2016) trained as a density model.

  python experiments/iaf.py --flagfile=experiments/configs/iaf_digits.flags

IAF samples in one pass per layer but evaluates densities in D sequential MADE passes
per layer, so it trains more slowly than MAF on the same data; it is here to show the
trade-off on the 64-dimensional digits.
"""

from dulx import cli

if __name__ == '__main__':
  cli.run('iaf')
