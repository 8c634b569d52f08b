"""PixelSNAIL (Chen et al. 2018, "PixelSNAIL: An Improved Autoregressive Generative Model").

Causal convolutions see a bounded neighbourhood; causal self-attention over the
pixels reads every earlier pixel at once. PixelSNAIL interleaves the two (Sec. 3,
Fig. 4): each block is a few gated residual convolution blocks followed by an
attention block whose keys and values come from the block's input, the raw image and
a position encoding, and whose queries come from the features and the position.

Here the network is causal over *pixels* (features at pixel i depend only on pixels
before i in raster order: the masked convolutions have one channel group), and an
output head adds the sub-pixels of pixel i itself in channel order R < G < B:

    u  = 2 x / (L - 1) - 1,   p = position encoding (row, column in [-1/2, 1/2])
    h  = Conv_A[k0 x k0](u)                                   strictly earlier pixels
    repeat num_blocks times:
      repeat num_residual times: h = G(h)                     G: gated residual, Conv_B[k x k]
      a = Attn(queries [h, p]; keys, values [u, h, p])        pixel i reads pixels j < i
      h = G_1x1(h, a)
    z  = Dense(elu(h)) + Conv_A[1x1, C groups](u)             group c also sees u_i[< c]
    logits = Conv_B[1x1, C groups](elu(z))                    -> C x (1 or L)

The gated residual block (PixelCNN++'s, as PixelSNAIL uses it, with elu):

    G(h, a) = h + A * sigmoid(B),  [A, B] = Conv(dropout(elu(Conv(elu(h)) + Dense(elu(a))))) + V y

where V y is a learned per-class bias when class-conditional. The attention is strict
(pixel i attends to j < i) because the keys read the raw pixel u_j. The paper's
convolutions are shifted 2x2 / 2x3 ones; dulx's masked 3x3 ones (`dulx.nn.MaskedConv2D`)
have PixelCNN's blind spot, which the attention, reaching every earlier pixel, covers.

`decode(x, t)` runs the network at one pixel, with the convolutions' input maps and
the attentions' keys and values in the 'cache' collection (Ramachandran et al. 2017),
so the cached sampler draws the naive sampler's samples in O(layers) work per step.
"""

from collections.abc import Callable
from typing import Any, Literal, TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dulx.errors import ConfigError
from dulx.models import check_event_shape, condition_classes, require_bool, require_choice
from dulx.models import require_int, require_levels, require_multiple, require_rate
from dulx.models import resolve_likelihood
from dulx.models.autoregressive.base import RasterLogitsModel
from dulx.nn.attention import CausalSelfAttention
from dulx.nn import masked_conv
from dulx.nn.masked_conv import IMPLS, MaskedConv2D

if TYPE_CHECKING:
  from dulx.data import DatasetInfo

__all__ = ['GatedResidual', 'PixelSNAIL', 'build', 'position_encoding']


def position_encoding(height: int, width: int) -> np.ndarray:
  """[H, W, 2] float32: each pixel's row and column, scaled to [-1/2, 1/2]."""
  rows = np.linspace(-0.5, 0.5, height, dtype=np.float32)
  cols = np.linspace(-0.5, 0.5, width, dtype=np.float32)
  return np.stack(np.meshgrid(rows, cols, indexing='ij'), axis=-1)


class GatedResidual(nn.Module):
  """The gated residual block G(h, a) (module docstring): [B, H, W, F] -> [B, H, W, F].

  Causal over pixels as its inputs: its k x k convolutions are mask 'B' with one
  channel group (pixel (h, w) reads pixels up to and including itself), and a must be
  per pixel.

  Attributes:
    kernel_size: odd size of the two convolutions (1: per-pixel dense layers).
    dropout_rate: dropout on the hidden features when training.
    num_classes: number of classes when class-conditional, else None.
    dtype: computation dtype.
    conv_impl: MaskedConv2D implementation.
  """
  kernel_size: int
  dropout_rate: float = 0.0
  num_classes: int | None = None
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'

  def _conv(self, features: int, name: str) -> nn.Module:
    if self.kernel_size == 1:
      return nn.Dense(features, dtype=self.dtype, name=name)
    return MaskedConv2D(features, self.kernel_size, 'B', dtype=self.dtype, impl=self.conv_impl,
                        name=name)

  def _gate(self, h: jax.Array, a: jax.Array | None, y: jax.Array | None,
            conv: Callable[[jax.Array, int, str], jax.Array],
            dropout: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """h + A * sigmoid(B) over [..., F] features; conv(z, features, name) applies a layer."""
    features = h.shape[-1]
    c = conv(nn.elu(h), features, 'conv_in')
    if a is not None:
      c = c + nn.Dense(features, dtype=self.dtype, name='aux')(nn.elu(a))
    c = conv(dropout(nn.elu(c)), 2 * features, 'conv_out')
    if self.num_classes is not None:
      class_bias = nn.Embed(self.num_classes, 2 * features, name='class_bias',
                            embedding_init=nn.initializers.zeros_init())(y)
      c = c + class_bias.reshape(class_bias.shape[0], *[1] * (c.ndim - 2), -1)
    value, gate = jnp.split(c.astype(self.dtype), 2, axis=-1)
    return h + value * nn.sigmoid(gate)

  @nn.compact
  def __call__(self, h: jax.Array, a: jax.Array | None = None, y: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """h: [B, H, W, F], a: [B, H, W, F'] or None, y: [B] labels -> [B, H, W, F] in dtype."""
    dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
    return self._gate(h, a, y, lambda z, features, name: self._conv(features, name)(z), dropout)

  @nn.compact
  def decode(self, h: jax.Array, row: jax.Array, col: jax.Array, size: tuple[int, int],
             a: jax.Array | None = None, y: jax.Array | None = None) -> jax.Array:
    """The block at pixel (row, col) alone: h [B, F], a [B, F'] or None -> [B, F].

    Each k x k convolution keeps its input map in the 'cache' collection and runs on
    the window that ends at the pixel (`dulx.nn.masked_conv.conv_at`). Apply with
    mutable=['cache'], pixels in raster order.
    """

    def conv_at(z, features, name):
      conv = self._conv(features, name)
      if self.kernel_size == 1:
        return conv(z)
      return masked_conv.conv_at(self, conv, z[:, None, None], row, col, size,
                                 f'{name}_inputs')[:, 0, 0]

    return self._gate(h, a, y, conv_at, lambda z: z)


class PixelSNAIL(RasterLogitsModel):
  """PixelSNAIL over images of discrete levels (module docstring).

  Attributes:
    event_shape: (H, W, C) of one image.
    num_levels: L, levels per sub-pixel.
    num_classes: number of classes when class-conditional, else None.
    dtype: computation dtype (parameters, attention softmax and logits stay float32).
    num_blocks: convolution + attention blocks.
    num_residual: gated residual blocks per block.
    channels: F, features of the residual stream.
    key_channels: query/key features of each attention (over all heads).
    value_channels: value features of each attention (over all heads).
    num_heads: attention heads (divide key_channels and value_channels).
    kernel_size: odd size of the residual blocks' convolutions.
    first_kernel_size: odd size of the first, mask 'A', convolution.
    head_channels: features of the output head's hidden layer.
    dropout_rate: dropout in the gated residual blocks when training.
    likelihood: 'bernoulli' (one logit per sub-pixel, L == 2) or 'categorical'.
    conv_impl: MaskedConv2D implementation: 'auto', 'xla' or 'taps'.
    remat_attention: recompute each block's attention weights in the backward pass
      instead of keeping them (the same values and gradients; see `build`).
  """
  event_shape: tuple[int, ...]
  num_levels: int
  num_classes: int | None = None
  dtype: Any = jnp.float32
  num_blocks: int = 2
  num_residual: int = 2
  channels: int = 64
  key_channels: int = 16
  value_channels: int = 32
  num_heads: int = 1
  kernel_size: int = 3
  first_kernel_size: int = 5
  head_channels: int = 64
  dropout_rate: float = 0.0
  likelihood: str = 'categorical'
  conv_impl: str = 'auto'
  remat_attention: bool = False

  @nn.compact
  def network(self, u: jax.Array, y: jax.Array | None = None, *,
              train: bool = False) -> jax.Array:
    """The network on real-valued inputs (differentiable in u).

    Args:
      u: [B, H, W, C] float inputs; levels enter as x / (L - 1) in [0, 1].
      y: [B] int labels in [0, num_classes) when class-conditional; ignored otherwise.
      train: apply dropout (draws the 'dropout' rng).

    Returns:
      float32 logits [B, H, W, C] (Bernoulli) or [B, H, W, C, L] (categorical); the
      logits of (h, w, c) depend only on u at positions earlier in `ordering()`.
    """
    check_event_shape(u, self.event_shape)
    if self.likelihood == 'bernoulli' and self.num_levels != 2:
      raise ValueError(f'a Bernoulli PixelSNAIL needs num_levels == 2, got {self.num_levels}.')
    if self.num_classes is not None and y is None:
      raise ValueError('this PixelSNAIL is class-conditional: pass labels y [B].')
    batch, height, width, _ = u.shape
    inputs = (2.0 * u - 1.0).astype(self.dtype)
    position = jnp.broadcast_to(jnp.asarray(position_encoding(height, width), self.dtype),
                                (batch, height, width, 2))
    gated = dict(dropout_rate=self.dropout_rate, num_classes=self.num_classes, dtype=self.dtype,
                 conv_impl=self.conv_impl)

    h = MaskedConv2D(self.channels, self.first_kernel_size, 'A', dtype=self.dtype,
                     impl=self.conv_impl, name='input_conv')(inputs)
    for i in range(self.num_blocks):
      for j in range(self.num_residual):
        h = GatedResidual(self.kernel_size, **gated, name=f'block{i}_residual{j}')(h, y=y, train=train)
      queries = jnp.concatenate([h, position], axis=-1).reshape(batch, height * width, -1)
      keys = jnp.concatenate([inputs, h, position], axis=-1).reshape(batch, height * width, -1)
      attended = CausalSelfAttention(
          self.num_heads, qk_features=self.key_channels, v_features=self.value_channels,
          out_features=self.channels, strict=True, dtype=self.dtype,
          remat=self.remat_attention, name=f'block{i}_attention')(queries, keys)
      h = GatedResidual(1, **gated, name=f'block{i}_mix')(
          h, attended.reshape(h.shape), y=y, train=train)

    return self._head(h, inputs)

  def _head(self, h: jax.Array, inputs: jax.Array) -> jax.Array:
    """Logits from the features h [B, H', W', F] and the inputs [B, H', W', C] of the same pixels.

    Pixel-causal features plus, for channel group c, the channels < c of the pixel
    itself (a 1x1 mask 'A' convolution, which needs C > 1 to have any tap).
    Returns float32 [B, H', W', C] (Bernoulli) or [B, H', W', C, L].
    """
    channels = inputs.shape[-1]
    z = nn.Dense(self.head_channels, dtype=self.dtype, name='head_hidden')(nn.elu(h))
    if channels > 1:
      z = z + MaskedConv2D(self.head_channels, 1, 'A', data_channels=channels, dtype=self.dtype,
                           impl=self.conv_impl, name='head_channels')(inputs)
    per_channel = 1 if self.likelihood == 'bernoulli' else self.num_levels
    logits = MaskedConv2D(channels * per_channel, 1, 'B', data_channels=channels, dtype=self.dtype,
                          impl=self.conv_impl, name='head_out')(nn.elu(z))
    if self.likelihood == 'categorical':
      logits = logits.reshape(*logits.shape[:-1], channels, per_channel)
    return logits.astype(jnp.float32)

  def __call__(self, x: jax.Array, y: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """Teacher-forced logits of every sub-pixel.

    Args:
      x: [B, H, W, C] int levels in [0, num_levels).
      y: [B] int labels when class-conditional; ignored otherwise.
      train: apply dropout (draws the 'dropout' rng).

    Returns:
      float32 logits [B, H, W, C] (Bernoulli) or [B, H, W, C, L] (categorical).
    """
    return self.network(x.astype(jnp.float32) / (self.num_levels - 1), y, train=train)

  @nn.compact
  def decode(self, x: jax.Array, t: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """The logits of sub-pixel t from x's sub-pixels < t, through caches (the sampling contract).

    Fast generation (Ramachandran et al. 2017): step t runs the network at its pixel
    p = t // C only. Each masked convolution reads a window of its input map, cached
    as the pixels are computed; each attention reads the cached keys and values of the
    pixels before p, writing those of pixel p - 1, whose sub-pixels are all drawn
    by now (its keys read the raw pixel). The C steps of a pixel recompute its
    features, which depend only on earlier pixels, and rewrite the same cache entries.
    Apply with mutable=['cache'] for t = 0, 1, ..., D - 1 in order; the call at t = 0
    creates the caches.

    Args:
      x: [B, H, W, C] int levels; sub-pixels < t are read.
      t: int32 scalar step in [0, H * W * C).
      y: [B] int labels when class-conditional.

    Returns:
      float32 [B, 1] (Bernoulli) or [B, 1, L] logits of sub-pixel t.
    """
    if self.num_classes is not None and y is None:
      raise ValueError('this PixelSNAIL is class-conditional: pass labels y [B].')
    batch, (height, width, channels) = x.shape[0], self.event_shape
    pixel, channel = t // channels, t % channels
    row, col = pixel // width, pixel % width
    inputs = (2.0 * x.astype(jnp.float32) / (self.num_levels - 1) - 1.0).astype(self.dtype)
    flat = inputs.reshape(batch, height * width, channels)
    position = jnp.asarray(position_encoding(height, width), self.dtype).reshape(-1, 2)
    previous = jnp.maximum(pixel - 1, 0)

    def at(a, index):  # Row `index` of [B?, N, F] as [B, F].
      a = jnp.broadcast_to(a, (batch, *a.shape[-2:]))
      return jax.lax.dynamic_index_in_dim(a, index, axis=1, keepdims=False)

    # The first, mask 'A', layer reads earlier pixels straight from x.
    c = self.first_kernel_size // 2
    padded = jnp.pad(inputs, ((0, 0), (c, 0), (c, c), (0, 0)))
    window = jax.lax.dynamic_slice(padded, (0, row, col, 0),
                                   (batch, c + 1, self.first_kernel_size, channels))
    h = MaskedConv2D(self.channels, self.first_kernel_size, 'A', dtype=self.dtype,
                     impl=self.conv_impl, name='input_conv').window(window)[:, 0, 0]
    gated = dict(dropout_rate=self.dropout_rate, num_classes=self.num_classes, dtype=self.dtype,
                 conv_impl=self.conv_impl)
    for i in range(self.num_blocks):
      for j in range(self.num_residual):
        h = GatedResidual(self.kernel_size, **gated, name=f'block{i}_residual{j}').decode(
            h, row, col, (height, width), y=y)
      features = self.variable('cache', f'block{i}_features', jnp.zeros,
                               (batch, height * width, self.channels), self.dtype)
      features.value = jax.lax.dynamic_update_slice_in_dim(features.value, h[:, None], pixel, axis=1)
      query = jnp.concatenate([h, at(position, pixel)], axis=-1)
      context = jnp.concatenate([at(flat, previous), at(features.value, previous),
                                 at(position, previous)], axis=-1)
      attended = CausalSelfAttention(
          self.num_heads, qk_features=self.key_channels, v_features=self.value_channels,
          out_features=self.channels, strict=True, dtype=self.dtype,
          name=f'block{i}_attention').decode(query[:, None], pixel, height * width,
                                             context[:, None])
      h = GatedResidual(1, **gated, name=f'block{i}_mix').decode(
          h, row, col, (height, width), a=attended[:, 0], y=y)
    logits = self._head(h[:, None, None], at(flat, pixel)[:, None, None])[:, 0, 0]
    return jax.lax.dynamic_index_in_dim(logits, channel, axis=1)


def _require_odd(name: str, value: Any, minimum: int) -> int:
  value = require_int(name, value, minimum=minimum)
  if value % 2 == 0:
    raise ConfigError(f'--{name} must be odd, got {value}.')
  return value


def build(info: 'DatasetInfo', *, dtype: Any = jnp.float32, num_blocks: int = 2,
          num_residual: int = 2, channels: int = 64, key_channels: int = 16,
          value_channels: int = 32, num_heads: int = 1, kernel_size: int = 3,
          first_kernel_size: int = 5, head_channels: int = 64, dropout: float = 0.0,
          conditional: bool = False,
          likelihood: Literal['auto', 'bernoulli', 'categorical'] = 'auto',
          conv_impl: Literal['auto', 'xla', 'taps'] = 'auto',
          remat_attention: bool = False) -> PixelSNAIL:
  """PixelSNAIL for `info`'s discrete images.

  Args:
    info: metadata of a discrete image dataset, examples of shape (H, W, C).
    dtype: computation dtype.
    num_blocks: convolution + attention blocks (>= 1).
    num_residual: gated residual blocks per block (>= 0).
    channels: features of the residual stream (>= 1).
    key_channels: query/key features of each attention (a multiple of num_heads).
    value_channels: value features of each attention (a multiple of num_heads).
    num_heads: attention heads (>= 1).
    kernel_size: odd size (>= 3) of the residual blocks' masked convolutions.
    first_kernel_size: odd size (>= 3) of the first, mask A, convolution.
    head_channels: features of the output head's hidden layer (>= C).
    dropout: dropout rate in [0, 1) in the gated residual blocks.
    conditional: condition on the class label (needs a labelled dataset).
    likelihood: 'auto' (Bernoulli for 2 levels, else categorical), 'bernoulli'
      (needs 2 levels) or 'categorical'.
    conv_impl: masked convolution implementation: 'auto' (per backend), 'xla'
      (lax convolution) or 'taps' (one matmul per unmasked tap).
    remat_attention: recompute each block's attention weights in the backward pass
      instead of keeping them: the gradient keeps O(B HW F) numbers per block instead
      of O(B heads (HW)^2), for one more forward of the attention (what that saves
      in device memory is up to XLA's scheduler: nothing on a CPU).
  """
  if len(info.shape) != 3:
    raise ConfigError(f'PixelSNAIL models images of shape (H, W, C), but {info.spec!r} has '
                      f'examples of shape {tuple(info.shape)}.')
  num_levels = require_levels(info, 'PixelSNAIL')
  num_heads = require_int('num_heads', num_heads)
  key_channels = require_multiple('key_channels', key_channels, num_heads, 'num_heads')
  value_channels = require_multiple('value_channels', value_channels, num_heads, 'num_heads')
  return PixelSNAIL(
      event_shape=tuple(info.shape), num_levels=num_levels,
      num_classes=condition_classes(info, conditional, 'PixelSNAIL'), dtype=dtype,
      num_blocks=require_int('num_blocks', num_blocks),
      num_residual=require_int('num_residual', num_residual, minimum=0),
      channels=require_int('channels', channels), key_channels=key_channels,
      value_channels=value_channels, num_heads=num_heads,
      kernel_size=_require_odd('kernel_size', kernel_size, minimum=3),
      first_kernel_size=_require_odd('first_kernel_size', first_kernel_size, minimum=3),
      head_channels=require_int('head_channels', head_channels, minimum=info.shape[-1]),
      dropout_rate=require_rate('dropout', dropout),
      likelihood=resolve_likelihood(likelihood, num_levels),
      conv_impl=require_choice('conv_impl', conv_impl, IMPLS),
      remat_attention=require_bool('remat_attention', remat_attention))
