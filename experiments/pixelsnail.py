"""PixelSNAIL (Chen et al. 2018): causal convolutions interleaved with causal self-attention.

  python experiments/pixelsnail.py --flagfile=experiments/configs/pixelsnail_digits.flags
  python experiments/pixelsnail.py --flagfile=experiments/configs/pixelsnail_mnist.flags

Samples are drawn with the cached decode step (`dulx.sampling.sample(..., method='auto')`).
The MNIST config trains on t10k[:8000] and evaluates on t10k[8000:] (the only MNIST
split in ../shared/data), dynamically binarized; see the README for what it reached.
"""

from dulx import cli

if __name__ == '__main__':
  cli.run('pixelsnail')
