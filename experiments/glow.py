"""Glow (Kingma & Dhariwal 2018): actnorm, invertible 1x1 convolutions, affine couplings.

  python experiments/glow.py --flagfile=experiments/configs/glow_digits.flags
  python experiments/glow.py --flagfile=experiments/configs/glow_mnist.flags

The MNIST config models the 256-level images (uniform dequantization, no
binarization), trains on t10k[:8000] and evaluates on t10k[8000:] (the only MNIST
split in ../shared/data); bits/dim include the dequantization and logit Jacobians, so
they compare with the literature. See the README for what it reached.
"""

from dulx import cli

if __name__ == '__main__':
  cli.run('glow')
