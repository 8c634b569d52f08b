"""Shifted (causal) convolutions of PixelCNN++ (Salimans et al. 2017, Sec. 2.3-2.4).

A raster-order image model needs features at (h, w) that see only pixels before
(h, w). PixelCNN++ builds them from two streams of ordinary convolutions whose
kernels are placed, by padding, above or above-and-left of the output pixel:

- 'down' (kernel (kh, kw), kw odd): output (i, j) sees the input rows
  s i - kh + 1 .. s i and columns s j - (kw - 1)/2 .. s j + (kw - 1)/2; the vertical
  stream, which sees whole rows above (the paper's 2x3 'down-shifted' convolution);
- 'down_right' (kernel (kh, kw)): rows s i - kh + 1 .. s i, columns s j - kw + 1 .. s j;
  the horizontal stream, which adds the current row to the left (2x2 'down-right').

With `down_shift` (move a map one row down, zero row on top) and `right_shift` (one
column right) on the first layer, neither stream sees the current pixel, so there is
no blind spot (unlike the masked 3x3 convolutions of the first PixelCNN).

The transposed convolutions (for the up-sampling path) place input (i, j) with
kernel tap (r, c) at output (s i + r, s j + c - (kw - 1)/2) ('down') or
(s i + r, s j + c) ('down_right'), with output size (s H, s W): output row p sees only
input rows i <= p / s, so a causal low-resolution map upsamples to a causal one.
A strided convolution has output size (ceil(H / s), ceil(W / s)).

A convolution also applies to an input its caller has already padded as `padding()`
says (`window`): to the kh padded rows, or the kh x kw padded taps, that make one
output row or one output pixel, read from a cache of its padded input. That is the
step of cached sampling (Ramachandran et al. 2017, "Fast Generation for Convolutional
Autoregressive Models"; see `dulx.models.autoregressive.pixelcnn_pp`).

All compute with `lax.conv_general_dilated` on explicitly padded inputs, in `dtype`,
with float32 parameters: 'kernel' [kh, kw, in, features] and 'bias' [features].
Unlike a masked convolution these kernels have no zero taps to skip, and the
one-matmul-per-tap form of `dulx.nn.masked_conv` ('taps') was measured slower on a
2-core CPU for whole PixelCNN++ training steps (forward and gradient; CPU time per
step, xla vs taps: 104 vs 163 ms for the digits config at batch 64, 3.5 vs 3.9 s for
the MNIST config at batch 16), so XLA's convolution is the one implementation.
"""

from typing import Any

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

__all__ = ['SHIFTS', 'ShiftedConv2D', 'down_shift', 'right_shift']

SHIFTS = ('down', 'down_right')
_DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')


def down_shift(x: jax.Array) -> jax.Array:
  """[B, H, W, F] -> [B, H, W, F]: row h of the output is row h - 1 of x (row 0 zero)."""
  return jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]


def right_shift(x: jax.Array) -> jax.Array:
  """[B, H, W, F] -> [B, H, W, F]: column w of the output is column w - 1 of x (column 0 zero)."""
  return jnp.pad(x, ((0, 0), (0, 0), (1, 0), (0, 0)))[:, :, :-1]


class ShiftedConv2D(nn.Module):
  """A down- or down-right-shifted convolution, or its transposed (up-sampling) form.

  Maps x: [B, H, W, in] to [B, ceil(H / s), ceil(W / s), features] (convolution) or
  [B, s H, s W, features] (transpose), s = strides; see the module docstring for
  which inputs each output sees.

  Attributes:
    features: output feature maps.
    kernel_size: (kh, kw); kw odd for 'down'.
    shift: 'down' (vertical stream) or 'down_right' (horizontal stream).
    strides: s >= 1, on both axes.
    transpose: the transposed convolution (up-sampling by s) instead.
    use_bias: add a learned bias.
    dtype: computation dtype (parameters stay float32).
    kernel_init: initializer of the kernel.
  """
  features: int
  kernel_size: tuple[int, int]
  shift: str
  strides: int = 1
  transpose: bool = False
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  def _check(self) -> None:
    if self.shift not in SHIFTS:
      raise ValueError(f'shift must be one of {SHIFTS}, got {self.shift!r}.')
    kh, kw = self.kernel_size
    if min(kh, kw, self.strides) < 1:
      raise ValueError(f'kernel_size {self.kernel_size} and strides {self.strides} must be >= 1.')
    if self.shift == 'down' and kw % 2 == 0:
      raise ValueError(f"a 'down' convolution is centred: its kernel width must be odd, "
                       f'got {self.kernel_size}.')

  def padding(self) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) zero padding of the (s-dilated, if transposed) input."""
    kh, kw = self.kernel_size
    centre = (kw - 1) // 2 if self.shift == 'down' else 0
    if not self.transpose:
      # Kernel columns left of the output column: centred ('down') or all ('down_right').
      left = centre if self.shift == 'down' else kw - 1
      return (kh - 1, 0), (left, kw - 1 - left)
    # Transposed: convolve the s-dilated input with the flipped kernel. Padding
    # (k - 1 - crop, s - 1 + crop) puts tap r of input i at output s i + r - crop and
    # gives s * n outputs (crop = 0 on rows; on columns, the centre for 'down', else 0).
    s = self.strides
    return (kh - 1, s - 1), (kw - 1 - centre, s - 1 + centre)

  @nn.compact
  def _apply(self, x: jax.Array,
             padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
    """The (transposed) convolution of x with the given zero padding, in `dtype`."""
    self._check()
    kh, kw = self.kernel_size
    kernel = self.param('kernel', self.kernel_init, (kh, kw, x.shape[-1], self.features),
                        jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if self.transpose:
      y = lax.conv_general_dilated(x, kernel[::-1, ::-1], window_strides=(1, 1),
                                   padding=padding, lhs_dilation=(self.strides,) * 2,
                                   dimension_numbers=_DIMENSIONS)
    else:
      y = lax.conv_general_dilated(x, kernel, window_strides=(self.strides,) * 2,
                                   padding=padding, dimension_numbers=_DIMENSIONS)
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y

  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, H, W, in] -> [B, H', W', features] in `dtype` (sizes in the class docstring)."""
    return self._apply(x, self.padding())

  def window(self, x: jax.Array) -> jax.Array:
    """The convolution of an input already zero padded as `padding()` says (no padding).

    x: [B, H', W', in] -> [B, (H' - kh) // s + 1, (W' - kw) // s + 1, features]. The
    padded rows s r .. s r + kh - 1 give output row r, and the kh x kw taps at padded
    (s r, s c) output (r, c) alone.

    Raises:
      ValueError: for a transposed convolution (its output row p reads only input
        row p // s: apply it to that row).
    """
    if self.transpose:
      raise ValueError('window applies a convolution, not a transposed one.')
    return self._apply(x, ((0, 0), (0, 0)))
