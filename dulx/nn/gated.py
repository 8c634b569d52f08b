"""Gated units and the two causal convolutions of the Gated PixelCNN.

Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
Decoders", Sec. 2.1-2.2, Fig. 2) replaces the masked k x k convolution of PixelCNN,
whose receptive field has a blind spot, by two stacks:

- the vertical stack, a (k // 2 + 1) x k convolution over the current row and the
  k // 2 rows above it (`VerticalConv`). It sees pixels to the right of (h, w) in row
  h, so its output is shifted down one row (`dulx.nn.shifted_conv.down_shift`, as
  PixelCNN++'s vertical stream does) before it may feed pixel (h, w); then it sees
  every earlier row of a window that widens with depth.
- the horizontal stack, a 1 x (k // 2 + 1) convolution over the k // 2 pixels to the
  left of (h, w) and (h, w) itself (`HorizontalConv`). Only the tap on (h, w) is
  masked, by the channel groups R < G < B as in `dulx.nn.masked_conv`: mask 'A' (the
  first layer) lets group g see input groups < g, mask 'B' groups <= g.

Both are written shifted-and-cropped: the input is zero padded on the top/left (and
on both sides horizontally for the vertical stack) and convolved without padding,
which is exact and has no masked taps but the channel-masked centre of the
horizontal stack. Each also applies to a pre-padded *window* (`window` methods), the
step of cached sampling (Ramachandran et al. 2017): one output row of the vertical
stack, or one output pixel of the horizontal stack, from the inputs it reads.

The gated activation (`gate`) is tanh(a_f) * sigmoid(a_g) over the two halves of a
2F-feature pre-activation. With channel groups, each half is split into groups
contiguously (`num_splits=2`), so the filter and gate of unit i share a group.
"""

from typing import Any

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from dulx.nn.masked_conv import _AUTO_IMPL, IMPLS, channel_groups

__all__ = ['HorizontalConv', 'VerticalConv', 'gate', 'horizontal_mask']


def gate(a: jax.Array) -> jax.Array:
  """The gated activation tanh(a_f) * sigmoid(a_g): [..., 2F] -> [..., F].

  a_f = a[..., :F] and a_g = a[..., F:] (van den Oord et al. 2016, Eq. 2; the
  conditioning terms V^T h are already added to `a` by the caller).
  """
  a_f, a_g = jnp.split(a, 2, axis=-1)
  return jnp.tanh(a_f) * jax.nn.sigmoid(a_g)


def _resolve(impl: str) -> str:
  if impl not in IMPLS:
    raise ValueError(f'impl must be one of {IMPLS}, got {impl!r}.')
  return impl if impl != 'auto' else _AUTO_IMPL.get(jax.default_backend(), 'xla')


def _valid_conv(x: jax.Array, kernel: jax.Array, taps: np.ndarray, impl: str) -> jax.Array:
  """Unpadded ('VALID') convolution of x [B, H', W', in] with kernel [kh, kw, in, out].

  `taps` [kh, kw] bool marks the taps that are not all zero; 'taps' skips the others
  and writes the rest as one [B * H * W, in] @ [in, out] matmul per tap (fast on CPU,
  see `dulx.nn.masked_conv`), 'xla' is `lax.conv_general_dilated`. The result is
  accumulated in float32 and cast to x.dtype.
  """
  if impl == 'xla':
    out = lax.conv_general_dilated(x, kernel, window_strides=(1, 1), padding='VALID',
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                   preferred_element_type=jnp.float32)
    return out.astype(x.dtype)
  batch, in_features = x.shape[0], x.shape[-1]
  height, width = x.shape[1] - kernel.shape[0] + 1, x.shape[2] - kernel.shape[1] + 1
  out = None
  for i, j in zip(*np.nonzero(taps)):
    window = x[:, i:i + height, j:j + width].reshape(-1, in_features)
    term = jnp.dot(window, kernel[i, j], preferred_element_type=jnp.float32)
    out = term if out is None else out + term
  return out.reshape(batch, height, width, -1).astype(x.dtype)


def _lecun_init(mask: np.ndarray) -> nn.initializers.Initializer:
  """LeCun truncated normal over the unmasked fan-in (mean over outputs), zero where masked."""
  fan_in = mask.sum() / mask.shape[-1]
  base = nn.initializers.variance_scaling(np.prod(mask.shape[:-1]) / fan_in, 'fan_in',
                                          'truncated_normal')

  def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    return base(key, shape, dtype) * jnp.asarray(mask, dtype)
  return init


class VerticalConv(nn.Module):
  """The vertical stack's convolution: output row h sees input rows h - k // 2 .. h.

  x: [B, H, W, in] -> [B, H, W, features] in `dtype`, 'SAME' size: output (h, w)
  depends on input (h', w') for h - k // 2 <= h' <= h and |w' - w| <= k // 2 (zero
  padding outside the image). Causal only after `down_shift`. Parameters (float32):
  'kernel' [k // 2 + 1, k, in, features] and 'bias' [features].

  Attributes:
    features: output features (2F for a gated unit).
    kernel_size: odd k >= 1.
    dtype: computation dtype.
    impl: 'xla', 'taps' or 'auto' (per backend, as `dulx.nn.MaskedConv2D`).
  """
  features: int
  kernel_size: int
  dtype: Any = jnp.float32
  impl: str = 'auto'

  def padding(self) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) zero padding that makes `window` the full conv."""
    c = self.kernel_size // 2
    return (c, 0), (c, c)

  @nn.compact
  def window(self, x: jax.Array) -> jax.Array:
    """The convolution of an already padded input: [B, H + k//2, W + 2 (k//2), in] -> [B, H, W, F].

    With H = 1 this is one output row from the k // 2 + 1 input rows it reads.
    """
    if self.kernel_size < 1 or self.kernel_size % 2 == 0:
      raise ValueError(f'kernel_size must be odd and positive, got {self.kernel_size}.')
    c = self.kernel_size // 2
    mask = np.ones((c + 1, self.kernel_size, x.shape[-1], self.features), np.float32)
    kernel = self.param('kernel', _lecun_init(mask), mask.shape, jnp.float32)
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
    out = _valid_conv(x.astype(self.dtype), kernel.astype(self.dtype), mask.any(axis=(2, 3)),
                      _resolve(self.impl))
    return out + bias.astype(self.dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, H, W, in] -> [B, H, W, features]."""
    return self.window(jnp.pad(x, ((0, 0), *self.padding(), (0, 0))))


def horizontal_mask(kernel_size: int, in_features: int, out_features: int, mask_type: str,
                    data_channels: int = 1, num_splits: int = 1) -> np.ndarray:
  """The horizontal kernel's mask: [1, k // 2 + 1, in, out] float32 of 0/1.

  Taps 0 .. k // 2 - 1 (the pixels to the left) are all ones; the last tap, the
  pixel itself, links input group a to output group b iff a < b (mask 'A') or a <= b
  (mask 'B'). Input features form `data_channels` contiguous groups; output features
  form `num_splits` equal blocks, each split into groups the same way.
  """
  if out_features % num_splits:
    raise ValueError(f'{out_features} output features do not split into {num_splits} blocks.')
  c = kernel_size // 2
  mask = np.ones((1, c + 1, in_features, out_features), np.float32)
  g_in = channel_groups(in_features, data_channels)[:, None]
  g_out = np.tile(channel_groups(out_features // num_splits, data_channels), num_splits)[None]
  mask[0, c] = (g_in < g_out) if mask_type == 'A' else (g_in <= g_out)
  return mask


class HorizontalConv(nn.Module):
  """The horizontal stack's convolution: (h, w) sees (h, w - k // 2 .. w - 1) and itself.

  x: [B, H, W, in] -> [B, H, W, features] in `dtype`, 'SAME' size: output (h, w,
  group g) depends on input (h, w') for w - k // 2 <= w' < w (all features) and on
  input groups < g (mask 'A') or <= g (mask 'B') of (h, w) itself; see
  `horizontal_mask`. With one channel group mask 'A' excludes (h, w) entirely.
  Parameters (float32): 'kernel' [1, k // 2 + 1, in, features] (masked entries start
  at zero and get zero gradient) and 'bias' [features].

  Attributes:
    features: output features (2F for a gated unit).
    kernel_size: odd k >= 1 (k = 1 with mask 'A' needs more than one channel group).
    mask_type: 'A' (first layer) or 'B'.
    data_channels: C, the number of channel groups (3 for RGB).
    num_splits: output blocks grouped separately (2 for a gated unit's filter and gate).
    dtype: computation dtype.
    impl: 'xla', 'taps' or 'auto'.
  """
  features: int
  kernel_size: int
  mask_type: str
  data_channels: int = 1
  num_splits: int = 1
  dtype: Any = jnp.float32
  impl: str = 'auto'

  def padding(self) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) zero padding that makes `window` the full conv."""
    return (0, 0), (self.kernel_size // 2, 0)

  @nn.compact
  def window(self, x: jax.Array) -> jax.Array:
    """The convolution of an already padded input: [B, H, W + k // 2, in] -> [B, H, W, F].

    With W = 1 this is one output pixel from the k // 2 + 1 input pixels it reads.
    """
    if self.kernel_size < 1 or self.kernel_size % 2 == 0:
      raise ValueError(f'kernel_size must be odd and positive, got {self.kernel_size}.')
    if self.mask_type not in ('A', 'B'):
      raise ValueError(f"mask_type must be 'A' or 'B', got {self.mask_type!r}.")
    if min(x.shape[-1], self.features // self.num_splits) < self.data_channels:
      raise ValueError(f'{x.shape[-1]} input and {self.features} output features cannot '
                       f'hold {self.data_channels} channel groups.')
    mask = horizontal_mask(self.kernel_size, x.shape[-1], self.features, self.mask_type,
                           self.data_channels, self.num_splits)
    taps = mask.any(axis=(2, 3))
    if not taps.any():
      raise ValueError("a 1x1 mask 'A' horizontal convolution with one channel group "
                       'masks every tap.')
    kernel = self.param('kernel', _lecun_init(mask), mask.shape, jnp.float32)
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
    kernel = kernel.astype(self.dtype)
    if not mask.all():
      kernel = kernel * jnp.asarray(mask, self.dtype)
    out = _valid_conv(x.astype(self.dtype), kernel, taps, _resolve(self.impl))
    return out + bias.astype(self.dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, H, W, in] -> [B, H, W, features]."""
    return self.window(jnp.pad(x, ((0, 0), *self.padding(), (0, 0))))
