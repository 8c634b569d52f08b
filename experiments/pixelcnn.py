"""PixelCNN (van den Oord et al. 2016): masked convolutions, mask A then mask B.

  python experiments/pixelcnn.py --flagfile=experiments/configs/pixelcnn_digits.flags
  python experiments/pixelcnn.py --flagfile=experiments/configs/pixelcnn_mnist.flags

The MNIST config trains on t10k[:8000] and evaluates on t10k[8000:] (the only MNIST
split in ../shared/data), dynamically binarized; see the README for what it reached.
"""

from dulx import cli

if __name__ == '__main__':
  cli.run('pixelcnn')
