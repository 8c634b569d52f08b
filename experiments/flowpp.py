"""Flow++ (Ho et al. 2019): mixture-logistic attention couplings, variational dequantization.

  python experiments/flowpp.py --flagfile=experiments/configs/flowpp_digits.flags
  python experiments/flowpp.py --flagfile=experiments/configs/flowpp_mnist.flags

The MNIST config models the 256-level images (variational dequantization, no
binarization), trains on t10k[:8000] and evaluates on t10k[8000:] (the only MNIST
split in ../shared/data); bits/dim include the dequantization (-log q) and logit
Jacobians, so they compare with the literature. See the README for what it reached.
"""

from dulx import cli

if __name__ == '__main__':
  cli.run('flowpp')
