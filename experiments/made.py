"""MADE: Masked Autoencoder for Distribution Estimation (Germain et al. 2015).

  python experiments/made.py --flagfile=experiments/configs/made_digits.flags
  python experiments/made.py --flagfile=experiments/configs/made_mnist.flags

The MNIST config trains on t10k[:8000] and evaluates on t10k[8000:] (the only MNIST
split in ../shared/data), dynamically binarized; see the README for what it reached.
"""

from dulx import cli

if __name__ == '__main__':
  cli.run('made')
