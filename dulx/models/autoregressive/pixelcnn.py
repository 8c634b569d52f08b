"""PixelCNN (van den Oord et al. 2016, "Pixel Recurrent Neural Networks", Sec. 3.5).

A stack of masked convolutions whose output at pixel (h, w), channel c is the
conditional p(x[h, w, c] | pixels before (h, w) in raster order, channels < c at
(h, w)): the first layer is a 7x7 mask 'A' convolution (excludes the current
pixel's own channel group), every later one mask 'B' (includes it), so the whole
network is causal in the raster-then-channel order (R < G < B).

Architecture (paper Table 4 and Fig. 5):

    h = Conv_A[k x k](x / (L - 1) - 1/2)                 -> stack channels
    repeat num_residual_blocks times (stack -> residual -> residual -> stack):
      h = h + Conv_B[1x1](relu(Conv_B[3x3](relu(Conv_B[1x1](relu(h))))))
    logits = Conv_B[1x1](relu(Conv_B[1x1](relu(h))))     -> head -> C * (1 or L)

All layers split their features into C channel groups (`dulx.nn.MaskedConv2D`).
Class-conditional (num_classes set): every convolution's output gets a learned
per-class bias E_l[y] (a function of y only, so it cannot break causality).

`decode(x, t, y)` is the step of cached sampling: the network at one pixel from
cached input maps, O(layers) work instead of a pass over the image.
"""

from collections.abc import Callable
from typing import Any, Literal, TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from dulx.errors import ConfigError
from dulx.models import check_event_shape, condition_classes, require_choice, require_int, require_levels
from dulx.models import resolve_likelihood
from dulx.models.autoregressive.base import RasterLogitsModel
from dulx.nn import masked_conv
from dulx.nn.masked_conv import IMPLS, MaskedConv2D

if TYPE_CHECKING:
  from dulx.data import DatasetInfo

__all__ = ['PixelCNN', 'build']


class PixelCNN(RasterLogitsModel):
  """The PixelCNN of van den Oord et al. (2016) over images of discrete levels.

  Attributes:
    event_shape: (H, W, C) of one image.
    num_levels: L, levels per sub-pixel.
    num_classes: number of classes when class-conditional, else None.
    dtype: computation dtype (parameters and logits stay float32).
    num_residual_blocks: residual blocks after the first layer.
    stack_channels: features carried between blocks (2h in the paper).
    residual_channels: features inside a block (h in the paper).
    head_channels: features of the hidden 1x1 layer of the output head.
    first_kernel_size: odd size of the first, mask 'A', convolution.
    likelihood: 'bernoulli' (one logit per sub-pixel, L == 2) or 'categorical'.
    conv_impl: MaskedConv2D implementation: 'auto', 'xla' or 'taps'.
  """
  event_shape: tuple[int, ...]
  num_levels: int
  num_classes: int | None = None
  dtype: Any = jnp.float32
  num_residual_blocks: int = 5
  stack_channels: int = 32
  residual_channels: int = 16
  head_channels: int = 32
  first_kernel_size: int = 7
  likelihood: str = 'categorical'
  conv_impl: str = 'auto'

  def _check(self, x: jax.Array, y: jax.Array | None) -> None:
    check_event_shape(x, self.event_shape)
    if self.likelihood == 'bernoulli' and self.num_levels != 2:
      raise ValueError(f'a Bernoulli PixelCNN needs num_levels == 2, got {self.num_levels}.')
    if self.num_classes is not None and y is None:
      raise ValueError('this PixelCNN is class-conditional: pass labels y [B].')

  def _layers(self, h: jax.Array, y: jax.Array | None,
              conv: Callable[[MaskedConv2D, jax.Array], jax.Array]) -> jax.Array:
    """The architecture (module docstring) from the first layer's input h: [B, H', W', .] -> logits.

    conv(layer, z) applies a masked convolution: to a whole map in the teacher-forced
    pass, at one pixel in `decode`. Call from a compact method.
    """
    channels = self.event_shape[-1]

    def layer(z, features, kernel_size, mask_type, name):
      out = conv(MaskedConv2D(features, kernel_size, mask_type, data_channels=channels,
                              dtype=self.dtype, impl=self.conv_impl, name=name), z)
      if self.num_classes is not None:
        class_bias = nn.Embed(self.num_classes, features,
                              embedding_init=nn.initializers.zeros_init(),
                              name=f'{name}_class_bias')(y)
        out = out + class_bias[:, None, None, :].astype(self.dtype)
      return out

    h = layer(h, self.stack_channels, self.first_kernel_size, 'A', 'input_conv')
    for i in range(self.num_residual_blocks):
      r = layer(nn.relu(h), self.residual_channels, 1, 'B', f'block{i}_reduce')
      r = layer(nn.relu(r), self.residual_channels, 3, 'B', f'block{i}_conv')
      h = h + layer(nn.relu(r), self.stack_channels, 1, 'B', f'block{i}_expand')
    h = layer(nn.relu(h), self.head_channels, 1, 'B', 'head_hidden')
    per_channel = 1 if self.likelihood == 'bernoulli' else self.num_levels
    logits = layer(nn.relu(h), channels * per_channel, 1, 'B', 'head_out')
    if self.likelihood == 'categorical':
      logits = logits.reshape(*logits.shape[:-1], channels, per_channel)
    return logits.astype(jnp.float32)

  @nn.compact
  def network(self, u: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """The masked network on real-valued inputs (differentiable in u).

    Args:
      u: [B, H, W, C] float inputs; levels enter as x / (L - 1) in [0, 1].
      y: [B] int labels in [0, num_classes) when class-conditional; ignored otherwise.

    Returns:
      float32 logits [B, H, W, C] (Bernoulli) or [B, H, W, C, L] (categorical);
      the logits of (h, w, c) depend only on u at positions earlier in `ordering()`.
    """
    self._check(u, y)
    return self._layers(u - 0.5, y, lambda layer, z: layer(z))

  def __call__(self, x: jax.Array, y: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """Teacher-forced logits of every sub-pixel.

    Args:
      x: [B, H, W, C] int levels in [0, num_levels).
      y: [B] int labels when class-conditional; ignored otherwise.
      train: unused (no dropout).

    Returns:
      float32 logits [B, H, W, C] (Bernoulli) or [B, H, W, C, L] (categorical).
    """
    del train
    return self.network(x.astype(jnp.float32) / (self.num_levels - 1), y)

  @nn.compact
  def decode(self, x: jax.Array, t: int | jax.Array, y: jax.Array | None = None) -> jax.Array:
    """The logits of sub-pixel t from the caches: one step of cached sampling.

    Fast generation (Ramachandran et al. 2017, "Fast Generation for Convolutional
    Autoregressive Models"): step t runs the network at its pixel p = t // C alone.
    Every masked convolution's output at p depends only on its input map at p and
    earlier pixels, so each 3x3 layer keeps its input map in the 'cache' collection
    and runs on the window that ends at p (`dulx.nn.masked_conv.conv_at`); the 1x1
    layers are per pixel, and the first layer reads its window from x itself (the
    pixel's channels are drawn one step at a time). The C steps of a pixel
    recompute its features; none depends on its last channel, so the cache holds
    the teacher-forced features once the pixel is done. Apply with mutable=['cache']
    at t = 0, 1, ..., D - 1 in turn; the call at t = 0 creates the caches.

    Args:
      x: [B, H, W, C] int levels; sub-pixels < t are drawn, the rest unread.
      t: int32 scalar step in [0, H * W * C).
      y: [B] int labels when class-conditional.

    Returns:
      float32 logits of sub-pixel t: [B, 1] (Bernoulli) or [B, 1, L] (categorical).
    """
    self._check(x, y)
    batch, (height, width, channels) = x.shape[0], self.event_shape
    pixel, channel = jnp.divmod(t, channels)
    row, col = jnp.divmod(pixel, width)
    c = self.first_kernel_size // 2
    u = x.astype(jnp.float32) / (self.num_levels - 1) - 0.5
    padded = jnp.pad(u, ((0, 0), (c, 0), (c, c), (0, 0)))
    window = jax.lax.dynamic_slice(padded, (0, row, col, 0),
                                   (batch, c + 1, self.first_kernel_size, channels))

    def conv(layer, z):
      if layer.name == 'input_conv':
        return layer.window(z)
      if layer.kernel_size == 1:
        return layer(z)
      return masked_conv.conv_at(self, layer, z, row, col, (height, width), f'{layer.name}_inputs')

    logits = self._layers(window, y, conv)[:, 0, 0]  # [B, C(, L)]
    return jax.lax.dynamic_slice_in_dim(logits, channel, 1, axis=1)

def build(info: 'DatasetInfo', *, dtype: Any = jnp.float32, num_residual_blocks: int = 5,
          stack_channels: int = 32, residual_channels: int = 16, head_channels: int = 32,
          first_kernel_size: int = 7, conditional: bool = False,
          likelihood: Literal['auto', 'bernoulli', 'categorical'] = 'auto',
          conv_impl: Literal['auto', 'xla', 'taps'] = 'auto') -> PixelCNN:
  """PixelCNN for `info`'s discrete images.

  Args:
    info: metadata of a discrete image dataset, examples of shape (H, W, C).
    dtype: computation dtype.
    num_residual_blocks: residual blocks (>= 0).
    stack_channels: features between residual blocks (>= C, the image channels).
    residual_channels: features inside a residual block (>= C).
    head_channels: features of the output head's hidden layer (>= C).
    first_kernel_size: odd size (>= 3) of the first, mask A, convolution.
    conditional: condition on the class label (needs a labelled dataset).
    likelihood: 'auto' (Bernoulli for 2 levels, else categorical), 'bernoulli'
      (needs 2 levels) or 'categorical'.
    conv_impl: masked convolution implementation: 'auto' (per backend), 'xla'
      (lax convolution) or 'taps' (one matmul per unmasked tap).
  """
  if len(info.shape) != 3:
    raise ConfigError(f'PixelCNN models images of shape (H, W, C), but {info.spec!r} has '
                      f'examples of shape {tuple(info.shape)}.')
  num_levels = require_levels(info, 'PixelCNN')
  channels = info.shape[-1]
  likelihood = resolve_likelihood(likelihood, num_levels)
  first_kernel_size = require_int('first_kernel_size', first_kernel_size, minimum=3)
  if first_kernel_size % 2 == 0:
    raise ConfigError(f'--first_kernel_size must be odd, got {first_kernel_size}.')
  return PixelCNN(
      event_shape=tuple(info.shape), num_levels=num_levels,
      num_classes=condition_classes(info, conditional, 'PixelCNN'), dtype=dtype,
      num_residual_blocks=require_int('num_residual_blocks', num_residual_blocks, minimum=0),
      stack_channels=require_int('stack_channels', stack_channels, minimum=channels),
      residual_channels=require_int('residual_channels', residual_channels, minimum=channels),
      head_channels=require_int('head_channels', head_channels, minimum=channels),
      first_kernel_size=first_kernel_size, likelihood=likelihood,
      conv_impl=require_choice('conv_impl', conv_impl, IMPLS))
