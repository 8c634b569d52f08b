"""Histograms: 1-D and 2-D joint discrete densities fitted by maximum likelihood.

The course's warm-up: one logits table over the whole (discretised) support, fitted
with Adam; compare with the closed-form MLE, the normalised counts.

  python experiments/histogram.py --flagfile=experiments/configs/histogram_toy2d.flags
"""

from dulx import cli

if __name__ == '__main__':
  cli.run('histogram')
