"""MAF: masked autoregressive flow (Papamakarios et al. 2017), MADE layers on flattened data.

  python experiments/maf.py --flagfile=experiments/configs/maf_toy2d.flags
  python experiments/maf.py --flagfile=experiments/configs/maf_digits.flags
  python experiments/maf.py --flagfile=experiments/configs/maf_mnist.flags

Images are dequantized with uniform noise and modelled in logit space; the reported
bits/dim count every Jacobian, so they compare with discrete models' on the same levels.
The MNIST config trains on t10k[:8000] and evaluates on t10k[8000:] (the only MNIST
split in ../shared/data).
"""

from dulx import cli

if __name__ == '__main__':
  cli.run('maf')
