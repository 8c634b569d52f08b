"""A char-RNN style autoregressive model (LSTM or GRU) over sequences and raster-order images.

  python experiments/rnn.py --flagfile=experiments/configs/rnn_digits.flags
  python experiments/rnn.py --flagfile=experiments/configs/rnn_mnist.flags
  python experiments/rnn.py --flagfile=experiments/configs/rnn_text.flags

Images are read pixel by pixel in raster order, with the row and column of the next
pixel as extra inputs; text as windows of characters of the embedded `text:alice`.
The MNIST config trains on t10k[:8000] and evaluates on t10k[8000:] (the only MNIST
split in ../shared/data), dynamically binarized; see the README for what they reached.
"""

from dulx import cli

if __name__ == '__main__':
  cli.run('rnn')
