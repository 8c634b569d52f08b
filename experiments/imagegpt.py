"""ImageGPT (Chen et al. 2020): a decoder-only transformer over pixels in raster order.

  python experiments/imagegpt.py --flagfile=experiments/configs/imagegpt_digits.flags
  python experiments/imagegpt.py --flagfile=experiments/configs/imagegpt_mnist.flags

Samples are drawn with the KV cache (`dulx.sampling.sample(..., method='auto')`).
The MNIST config trains on t10k[:8000] and evaluates on t10k[8000:] (the only MNIST
split in ../shared/data), dynamically binarized; see the README for what it reached.
"""

from dulx import cli

if __name__ == '__main__':
  cli.run('imagegpt')
