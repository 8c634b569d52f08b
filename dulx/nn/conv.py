"""A stride-1 'SAME' convolution whose gradients are plain forward convolutions.

JAX differentiates `lax.conv_general_dilated` into convolutions with permuted
dimension numbers: the input gradient convolves with the flipped kernel read as
[H, W, O, I], the kernel gradient contracts over the batch. Outside a loop XLA
relayouts the operands once and calls its fast convolution. Inside a loop body
(`lax.while_loop`, `lax.scan`: an adaptive ODE solver's steps, or backpropagation
through them) the CPU backend often cannot, and falls back to a generic loop nest: on
2 x86 cores the input gradient of a 3x3, 32 -> 32 channel convolution on a 16 x 28 x 28
batch took 47 ms per iteration of a `fori_loop` against 1.4 ms outside, the kernel
gradient 113 ms against 3.5 ms. `same_conv` gives both gradients as ordinary
[N, H, W, C] x [h, w, I, O] convolutions on explicitly transposed operands, which
every backend runs on its fast path; its input gradient is `same_conv` again, so
second derivatives (FFJORD's trace term differentiated in training) stay on it too.

It is a `jax.custom_vjp`: reverse mode to any order (`grad`, `vjp`, `jacrev`), no
forward mode (`jvp`, `jacfwd` raise). A JVP rule would not help: reverse mode
transposes the JVP's convolutions with XLA's own rule, the slow one.
"""

from typing import Any

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

__all__ = ['Conv', 'same_conv']

_DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')


def _check(x: jax.Array, kernel: jax.Array) -> None:
  h, w, in_features, _ = kernel.shape
  if x.ndim != 4 or x.shape[-1] != in_features or h % 2 == 0 or w % 2 == 0:
    raise ValueError(f'same_conv needs x [N, H, W, C] and an odd-sized kernel [h, w, C, O], '
                     f'got x {x.shape} and kernel {kernel.shape}.')


def _conv(x: jax.Array, kernel: jax.Array, padding: str | tuple) -> jax.Array:
  return lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_DIMENSIONS)


@jax.custom_vjp
def same_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """[N, H, W, C] x [h, w, C, O] -> [N, H, W, O]: stride 1, zero 'SAME' padding, h and w odd.

  Equal to `lax.conv_general_dilated(x, kernel, (1, 1), 'SAME')` in NHWC/HWIO, and so
  are its gradients; only how they are computed differs (see the module docstring).
  Reverse-mode differentiable only.
  """
  _check(x, kernel)
  return _conv(x, kernel, 'SAME')


def _kernel_grad(x: jax.Array, g: jax.Array, kernel_shape: tuple[int, ...]) -> jax.Array:
  """d<g, same_conv(x, k)>/dk [h, w, C, O]: x's channels as the batch, its batch as the features."""
  h, w = kernel_shape[:2]
  padded = jnp.pad(x, ((0, 0), (h // 2, h // 2), (w // 2, w // 2), (0, 0)))
  # [C, H + h - 1, W + w - 1, N] convolved with g as an [H, W, N, O] kernel: [C, h, w, O].
  out = _conv(jnp.transpose(padded, (3, 1, 2, 0)), jnp.transpose(g, (1, 2, 0, 3)), 'VALID')
  return jnp.transpose(out, (1, 2, 0, 3))


def _same_conv_fwd(x, kernel):
  return same_conv(x, kernel), (x, kernel)


def _same_conv_bwd(residuals, g):
  x, kernel = residuals
  # The input gradient: g convolved with the kernel flipped in space, I and O swapped
  # (the padding of an odd kernel is symmetric, so 'SAME' again).
  flipped = jnp.transpose(jnp.flip(kernel, (0, 1)), (0, 1, 3, 2))
  return same_conv(g, flipped), _kernel_grad(x, g, kernel.shape)


same_conv.defvjp(_same_conv_fwd, _same_conv_bwd)


class Conv(nn.Module):
  """`nn.Conv(features, kernel_size, padding='SAME')` at stride 1 with `same_conv` inside.

  The same parameters ('kernel' [h, w, C, O], LeCun-normal; 'bias' [O], zeros) and the
  same function; use it where the convolution runs inside a loop that is differentiated
  (reverse mode only, as `same_conv`).
  """
  features: int
  kernel_size: tuple[int, int] = (3, 3)
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (*self.kernel_size, x.shape[-1], self.features), self.param_dtype)
    dtype = self.dtype or jnp.result_type(x, kernel)
    y = same_conv(x.astype(dtype), kernel.astype(dtype))
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,), self.param_dtype).astype(dtype)
    return y
