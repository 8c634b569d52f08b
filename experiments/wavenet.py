"""WaveNet (van den Oord et al. 2016): gated dilated causal convolutions, fast cached sampling.

  python experiments/wavenet.py --flagfile=experiments/configs/wavenet_digits.flags
  python experiments/wavenet.py --flagfile=experiments/configs/wavenet_mnist.flags
  python experiments/wavenet.py --flagfile=experiments/configs/wavenet_text.flags

Images are modelled as sequences in raster order with each pixel's row and column as
extra inputs; text as windows of characters of the embedded `text:alice`. The MNIST
config trains on t10k[:8000] and evaluates on t10k[8000:] (the only MNIST split in
../shared/data), dynamically binarized; see the README for what they reached.
"""

from dulx import cli

if __name__ == '__main__':
  cli.run('wavenet')
