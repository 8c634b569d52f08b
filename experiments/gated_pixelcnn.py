"""Gated PixelCNN (van den Oord et al. 2016): vertical and horizontal stacks of gated units.

  python experiments/gated_pixelcnn.py --flagfile=experiments/configs/gated_pixelcnn_digits.flags
  python experiments/gated_pixelcnn.py --flagfile=experiments/configs/gated_pixelcnn_mnist.flags

The MNIST config trains on t10k[:8000] and evaluates on t10k[8000:] (the only MNIST
split in ../shared/data), dynamically binarized; it is the GPU-sized config. Sample
grids use the cached sampler (Ramachandran et al. 2017); see the README for results.
"""

from dulx import cli

if __name__ == '__main__':
  cli.run('gated_pixelcnn')
