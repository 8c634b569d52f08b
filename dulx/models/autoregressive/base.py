"""What the autoregressive models over per-dimension logits share.

PixelCNN, Gated PixelCNN, PixelSNAIL, ImageGPT, the RNN and WaveNet each define
`__call__(x, y=None, *, train=False)`: one teacher-forced pass returning the logits of
every dimension's conditional (Bernoulli [B, *event_shape], categorical
[B, *event_shape, L]), dimension d depending only on dimensions before it in raster
order over the flattened event (channels in order within a pixel). Given that, the
ordering and the log-likelihood are the same for all of them, and live here once.
"""

import math

import flax.linen as nn
import jax
import numpy as np

from dulx import distributions

__all__ = ['RasterLogitsModel']


class RasterLogitsModel(nn.Module):
  """Base of the raster-order autoregressive models that return per-dimension logits.

  A subclass has an `event_shape` attribute and a `__call__(x, y=None, *, train=False)`
  returning the logits of every dimension; it inherits `ordering` and `log_prob`.
  """

  def ordering(self) -> np.ndarray:
    """[D]: raster order over the flattened event (channels in order within a pixel)."""
    return np.arange(math.prod(self.event_shape))

  def log_prob(self, x: jax.Array, y: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """log p(x) (or log p(x | y)) in nats: [B] float32, summed over the D dimensions."""
    logp = distributions.log_prob(self(x, y, train=train), x)
    return logp.reshape(x.shape[0], -1).sum(axis=-1)
