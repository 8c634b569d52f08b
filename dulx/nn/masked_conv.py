"""Masked 2-D convolution for raster-order autoregressive image models.

PixelCNN (van den Oord et al. 2016, "Pixel Recurrent Neural Networks", Sec. 3.5,
Fig. 2) makes a convolution causal by zeroing the kernel taps that would let pixel
(h, w) see itself or any later pixel in raster order. Within a pixel the C data
channels (R < G < B) are generated in order, so the feature maps of every layer are
split into C contiguous groups: feature i of F belongs to group floor(i * C / F).

With the kernel centre at (c, c), c = k // 2, tap (i, j) links input pixel
(h + i - c, w + j - c) to output pixel (h, w), and the mask is

    M[i, j, a, b] = 1                      if i < c, or i == c and j < c
    M[c, c, a, b] = [g_in(a) <  g_out(b)]  mask 'A' (first layer: excludes the pixel itself)
    M[c, c, a, b] = [g_in(a) <= g_out(b)]  mask 'B' (later layers)
    M[i, j, a, b] = 0                      otherwise (rows below, right of centre)

Two implementations compute the same function from the same parameters:

- 'xla': `lax.conv_general_dilated` with the kernel times the mask, cropped to its
  top c + 1 rows (the rows below the centre are all zero);
- 'taps': a sum of one matmul per *unmasked* tap over a shifted view of the input
  (24 of 49 taps for a 7x7 mask 'A' with C = 1, 5 of 9 for 3x3 mask 'B'). XLA's CPU
  convolution gradient is slow; matmuls are not (see benchmarks/conv_impl.py).

'auto' picks per backend, from measurements recorded in `_AUTO_IMPL`.
"""

from typing import Any

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

__all__ = ['MaskedConv2D', 'channel_groups', 'conv_at', 'conv_mask']

IMPLS = ('auto', 'xla', 'taps')

# The CPU choice is measured (benchmarks/conv_impl.py, 2-core CPU): 'taps' had the
# faster forward+backward at every PixelCNN layer but the first (in = 1 channel),
# 1.7x to 12x, the 1x1 layers most; a whole PixelCNN step took 4.4 s against 9.8 s
# (15 blocks x 16 channels, batch 256) and 25 s against 335 s (15 x 128, batch 128).
# The GPU/TPU choice is not measured: 'xla' maps to cuDNN / the TPU convolution
# units, the well-trodden fast path there.
_AUTO_IMPL = {'cpu': 'taps'}


def channel_groups(num_features: int, num_groups: int) -> np.ndarray:
  """Group of each of `num_features` features: [F] int, contiguous, floor(i * G / F)."""
  return np.arange(num_features) * num_groups // num_features


def conv_mask(kernel_size: int, in_features: int, out_features: int, mask_type: str,
              data_channels: int = 1) -> np.ndarray:
  """The PixelCNN kernel mask (module docstring): [k, k, in, out] float32 of 0/1."""
  c = kernel_size // 2
  mask = np.zeros((kernel_size, kernel_size, in_features, out_features), np.float32)
  mask[:c] = 1.0
  mask[c, :c] = 1.0
  g_in = channel_groups(in_features, data_channels)[:, None]
  g_out = channel_groups(out_features, data_channels)[None, :]
  mask[c, c] = (g_in < g_out) if mask_type == 'A' else (g_in <= g_out)
  return mask


def _masked_init(mask: np.ndarray) -> nn.initializers.Initializer:
  """LeCun truncated normal over the *unmasked* fan-in, zero on masked taps.

  The mean number of unmasked inputs per output unit, sum(M) / out, is the fan-in
  that sets the scale (a 7x7 mask 'A' kernel has about half the taps of a full one).
  """
  full_fan_in = np.prod(mask.shape[:-1])
  fan_in = mask.sum() / mask.shape[-1]
  base = nn.initializers.variance_scaling(full_fan_in / fan_in, 'fan_in', 'truncated_normal')

  def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    return base(key, shape, dtype) * jnp.asarray(mask, dtype)
  return init


def _conv_xla(xp: jax.Array, kernel: jax.Array, mask: np.ndarray) -> jax.Array:
  """lax convolution of the padded input with the masked kernel's top c + 1 rows ('VALID')."""
  c = kernel.shape[0] // 2
  kernel = (kernel * jnp.asarray(mask, kernel.dtype))[:c + 1]
  return lax.conv_general_dilated(xp, kernel, window_strides=(1, 1), padding='VALID',
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _conv_taps(xp: jax.Array, kernel: jax.Array, mask: np.ndarray) -> jax.Array:
  """sum over unmasked taps (i, j) of xp[:, h + i, w + j] @ (K * M)[i, j].

  xp is the input padded by c rows on top and c columns either side (`padding`), so
  tap (i, j) is the window xp[:, i:i + H, j:j + W]; no tap reaches below the centre
  row, so there is no bottom pad. Each window is flattened to a [B * H * W, in]
  matrix first: XLA's CPU backend runs (and differentiates) that 2-D matmul several
  times faster than the same contraction written over the 4-D window. The matmuls
  accumulate in float32 and the sum is cast back to xp.dtype.
  """
  c = kernel.shape[0] // 2
  batch, height, width, in_features = xp.shape
  height, width = height - c, width - 2 * c
  out = None
  for i in range(c + 1):
    for j in range(kernel.shape[1]):
      tap_mask = mask[i, j]
      if not tap_mask.any():
        continue
      w = kernel[i, j] if tap_mask.all() else kernel[i, j] * jnp.asarray(tap_mask, kernel.dtype)
      window = xp[:, i:i + height, j:j + width].reshape(-1, in_features)
      term = jnp.dot(window, w, preferred_element_type=jnp.float32)
      out = term if out is None else out + term
  return out.reshape(batch, height, width, -1).astype(xp.dtype)


class MaskedConv2D(nn.Module):
  """A 'SAME' 2-D convolution masked for raster-then-channel autoregression.

  Maps x: [B, H, W, in] to [B, H, W, features] in `dtype`; output (h, w, group g)
  depends only on input pixels before (h, w) in raster order and, at (h, w)
  itself, on input groups < g (mask 'A') or <= g (mask 'B'). Parameters are float32:
  'kernel' [k, k, in, features] (masked taps start at zero and get zero gradient)
  and 'bias' [features]; the same tree for every `impl`.

  Attributes:
    features: output feature maps; at least `data_channels`.
    kernel_size: odd k >= 1. A 1x1 mask 'B' layer with C > 1 is a channel-masked
      per-pixel linear map; a 1x1 mask 'A' layer needs C > 1 (else all taps are masked).
    mask_type: 'A' (excludes the current pixel's own group) or 'B' (includes it).
    data_channels: C, the number of channel groups (3 for RGB).
    use_bias: add a learned bias.
    dtype: computation dtype (parameters stay float32).
    impl: 'xla', 'taps' or 'auto' (per backend; see the module docstring).
  """
  features: int
  kernel_size: int
  mask_type: str
  data_channels: int = 1
  use_bias: bool = True
  dtype: Any = jnp.float32
  impl: str = 'auto'

  def resolved_impl(self) -> str:
    """The implementation this module runs on the current default backend."""
    if self.impl != 'auto':
      return self.impl
    return _AUTO_IMPL.get(jax.default_backend(), 'xla')

  def _check(self, in_features: int) -> None:
    if self.kernel_size < 1 or self.kernel_size % 2 == 0:
      raise ValueError(f'kernel_size must be odd and positive, got {self.kernel_size}.')
    if self.mask_type not in ('A', 'B'):
      raise ValueError(f"mask_type must be 'A' or 'B', got {self.mask_type!r}.")
    if self.impl not in IMPLS:
      raise ValueError(f'impl must be one of {IMPLS}, got {self.impl!r}.')
    if min(in_features, self.features) < self.data_channels:
      raise ValueError(f'{in_features} input and {self.features} output features cannot '
                       f'hold {self.data_channels} channel groups.')
    if self.kernel_size == 1 and self.mask_type == 'A' and self.data_channels == 1:
      raise ValueError("a 1x1 mask 'A' convolution with one channel group masks every tap.")

  def padding(self) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) zero padding that makes `window` the 'SAME' convolution."""
    c = self.kernel_size // 2
    return (c, 0), (c, c)

  @nn.compact
  def window(self, xp: jax.Array) -> jax.Array:
    """The convolution of an already padded input: [B, H + c, W + 2c, in] -> [B, H, W, F].

    c = kernel_size // 2. With H = W = 1 this is one output pixel from the (c + 1) x k
    window that ends at it, the step of cached sampling (Ramachandran et al. 2017).
    """
    self._check(xp.shape[-1])
    mask = conv_mask(self.kernel_size, xp.shape[-1], self.features, self.mask_type,
                     self.data_channels)
    kernel = self.param('kernel', _masked_init(mask), mask.shape, jnp.float32)
    xp = xp.astype(self.dtype)
    kernel = kernel.astype(self.dtype)
    conv = _conv_taps if self.resolved_impl() == 'taps' else _conv_xla
    y = conv(xp, kernel, mask)
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y

  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, H, W, in] -> [B, H, W, features] in `dtype`."""
    return self.window(jnp.pad(x, ((0, 0), *self.padding(), (0, 0))))


def conv_at(owner: nn.Module, conv: MaskedConv2D, z: jax.Array, row: jax.Array, col: jax.Array,
            size: tuple[int, int], cache_name: str) -> jax.Array:
  """`conv`'s output at pixel (row, col) alone, from a cached input map.

  z: [B, 1, 1, in], the layer's input at the pixel -> [B, 1, 1, features].

  The step of cached sampling (Ramachandran et al. 2017, "Fast Generation for
  Convolutional Autoregressive Models") for a masked convolution: its input map,
  zero padded ([B, H + c, W + 2c, in], c = k // 2), lives in `owner`'s 'cache'
  collection as `cache_name`; z is written at the pixel and the layer runs on the
  (c + 1) x k window that ends there. Its output equals the full convolution's at
  the pixel as long as every pixel before it was written: the mask never reaches
  later pixels, whose entries are zeros or stale. Call from a compact method of
  `owner` applied with mutable=['cache'], pixels in raster order (a pixel may be
  rewritten, e.g. once per channel).
  """
  height, width = size
  c = conv.kernel_size // 2
  batch, in_features = z.shape[0], z.shape[-1]
  inputs = owner.variable('cache', cache_name, jnp.zeros,
                          (batch, height + c, width + 2 * c, in_features), z.dtype)
  inputs.value = jax.lax.dynamic_update_slice(inputs.value, z.astype(inputs.value.dtype),
                                              (0, row + c, col + c, 0))
  window = jax.lax.dynamic_slice(inputs.value, (0, row, col, 0),
                                 (batch, c + 1, conv.kernel_size, in_features))
  return conv.window(window)
