"""NICE (Dinh et al. 2015): additive couplings and a diagonal scaling, logistic prior.

  python experiments/nice.py --flagfile=experiments/configs/nice_digits.flags

The model reads the images as discrete levels, dequantizes them (uniform noise, or
--dequantization=variational) and reports the dequantization bound in bits/dim,
comparable with discrete models; see the README for what it reached.
"""

from dulx import cli

if __name__ == '__main__':
  cli.run('nice')
