"""PixelCNN++ (Salimans et al. 2017): shifted convolutions in a down/up-sampling U-net of
gated resnet blocks, with a discretized logistic mixture over each pixel's channels.

  python experiments/pixelcnn_pp.py --flagfile=experiments/configs/pixelcnn_pp_digits.flags
  python experiments/pixelcnn_pp.py --flagfile=experiments/configs/pixelcnn_pp_mnist.flags

The MNIST config models the 256 grey levels (no binarization), trains on t10k[:8000]
and evaluates on t10k[8000:] (the only MNIST split in ../shared/data); see the README
for what it reached.
"""

from dulx import cli

if __name__ == '__main__':
  cli.run('pixelcnn_pp')
