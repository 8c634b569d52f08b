"""Dilated causal 1-D convolutions, their one-step cached form, and raster positions.

WaveNet (van den Oord et al. 2016, "WaveNet: A Generative Model for Raw Audio",
Sec. 2.1) stacks causal convolutions whose kernel taps are `dilation` steps apart.
With kernel size k and dilation d, output t of `CausalConv1D` is

    y_t = b + sum_{j=0}^{k-1} W_j x_{t - (k-1-j) d}        (x_s = 0 for s < 0),

so it sees (k - 1) d + 1 steps, none after t; a stack with dilations 1, 2, 4, ...
grows its receptive field exponentially with depth. The taps are written as one
matmul over the k shifted copies of x concatenated on the feature axis (no XLA
convolution: its CPU gradient is slow, see DESIGN.md's Performance section).

Cached form (Paine et al. 2016, "Fast Wavenet Generation Algorithm"; Ramachandran
et al. 2017, "Fast Generation for Convolutional Autoregressive Models"): when the
sequence is generated one step at a time, `decode(x_t, t)` keeps the last
(k - 1) d inputs of the layer in a circular buffer (the 'queue' of Paine et al.) in
the 'cache' collection: it reads the k - 1 past taps at slots (t - m d) mod ((k-1) d),
then overwrites slot t mod ((k-1) d), the oldest input, which no later step needs.
A step costs O(k) reads and one matmul, independent of t and of the dilation.

`raster_positions` gives every dimension of an event (a sequence step, or an image
sub-pixel flattened in raster order) its normalised coordinates, the position
features that the RNN and WaveNet models feed alongside the data.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ['CausalConv1D', 'raster_positions', 'shift_right']


def shift_right(x: jax.Array) -> jax.Array:
  """[B, T, F] -> [B, T, F] with step t holding step t - 1 of x (step 0 zeros).

  A causal convolution of the shifted sequence excludes the current step: WaveNet's
  first layer, so that output t predicts x_t from x_<t.
  """
  return jnp.pad(x, ((0, 0), (1, 0), (0, 0)))[:, :-1]


def raster_positions(event_shape: tuple[int, ...]) -> np.ndarray:
  """The normalised coordinates of every dim of an event, in C (raster) order.

  Args:
    event_shape: e.g. (T,) for a sequence or (H, W, C) for an image.

  Returns:
    float32 [D, P], D = prod(event_shape): for dim d at index (i_1, ..., i_r), the
    coordinates 2 i_a / (n_a - 1) - 1 in [-1, 1] of every axis a of size n_a > 1
    (a sequence: the step; an image: row, column and, for C > 1, the channel).
    P is the number of axes of size > 1 (0 for a single dim).
  """
  axes = [np.linspace(-1.0, 1.0, n) for n in event_shape]
  grids = np.meshgrid(*axes, indexing='ij')
  columns = [g.reshape(-1) for g, n in zip(grids, event_shape) if n > 1]
  return np.stack(columns, axis=-1).astype(np.float32) if columns else np.zeros(
      (math.prod(event_shape), 0), np.float32)


class CausalConv1D(nn.Module):
  """A dilated causal convolution over [B, T, F_in] sequences, with a cached step.

  Attributes:
    features: output features.
    kernel_size: k >= 1 taps.
    dilation: d >= 1, the distance between taps.
    dtype: computation dtype (parameters stay float32).
    use_bias: add a learned bias.
  """
  features: int
  kernel_size: int = 2
  dilation: int = 1
  dtype: Any = jnp.float32
  use_bias: bool = True

  @property
  def receptive_field(self) -> int:
    """The number of steps one output sees: (k - 1) d + 1, ending at itself."""
    return (self.kernel_size - 1) * self.dilation + 1

  def _weights(self, in_features: int) -> tuple[jax.Array, jax.Array]:
    """kernel [k * F_in, F] (tap j's rows are j * F_in ... (j + 1) * F_in - 1) and bias [F]."""
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (self.kernel_size, in_features, self.features))
    bias = jnp.zeros((self.features,))
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    kernel = kernel.reshape(self.kernel_size * in_features, self.features)
    return kernel.astype(self.dtype), bias.astype(self.dtype)

  def _check(self) -> None:
    if self.kernel_size < 1 or self.dilation < 1:
      raise ValueError(f'kernel_size and dilation must be >= 1, got {self.kernel_size} '
                       f'and {self.dilation}.')

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """y_t = b + sum_j W_j x_{t - (k-1-j) d}: [B, T, F_in] -> [B, T, F], causal in t."""
    self._check()
    kernel, bias = self._weights(x.shape[-1])
    x = x.astype(self.dtype)
    length = x.shape[1]
    taps = []
    for j in range(self.kernel_size):
      lag = (self.kernel_size - 1 - j) * self.dilation
      taps.append(jnp.pad(x, ((0, 0), (lag, 0), (0, 0)))[:, :length])
    return jnp.concatenate(taps, axis=-1) @ kernel + bias

  @nn.compact
  def decode(self, x_t: jax.Array, t: int | jax.Array) -> jax.Array:
    """Output t from input t and the cached inputs t - (k-1) d ... t - 1.

    Applied with mutable=['cache'] at t = 0, 1, 2, ... in turn; the call at t = 0
    creates the buffer (zeros: the causal padding). Equals `__call__(x)[:, t]`.

    Args:
      x_t: [B, F_in] input at step t.
      t: the step index (int or traced int32 scalar).

    Returns:
      [B, F] output at step t.
    """
    self._check()
    kernel, bias = self._weights(x_t.shape[-1])
    x_t = x_t.astype(self.dtype)
    size = (self.kernel_size - 1) * self.dilation
    if size == 0:
      return x_t @ kernel + bias
    queue = self.variable('cache', 'queue', jnp.zeros, (x_t.shape[0], size, x_t.shape[-1]),
                          self.dtype)
    lags = [(self.kernel_size - 1 - j) * self.dilation for j in range(self.kernel_size - 1)]
    slots = jnp.mod(t - jnp.asarray(lags), size)
    past = jnp.take(queue.value, slots, axis=1)  # [B, k - 1, F_in], oldest tap first.
    taps = jnp.concatenate([past.reshape(x_t.shape[0], -1), x_t], axis=-1)
    queue.value = jax.lax.dynamic_update_slice_in_dim(queue.value, x_t[:, None],
                                                      jnp.mod(t, size), axis=1)
    return taps @ kernel + bias
