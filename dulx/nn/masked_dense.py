"""A dense layer whose connectivity is restricted by a 0/1 mask.

The building block of MADE (Germain et al. 2015, "MADE: Masked Autoencoder for
Distribution Estimation") and of masked autoregressive flows: the kernel is
multiplied elementwise by a mask before the matmul, so masked-out weights neither
act in the forward pass nor receive gradient.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ['MaskedDense', 'degree_mask']

Initializer = Callable[..., jax.Array]


def degree_mask(in_degrees: jax.Array, out_degrees: jax.Array, *, strict: bool,
                dtype: Any = jnp.float32) -> jax.Array:
  """The connectivity mask of MADE (Germain et al. 2015, Eqs. 12-13).

  M[d, k] = 1 iff out_degrees[k] >= in_degrees[d] (hidden layers), or
  out_degrees[k] > in_degrees[d] when `strict` (the output layer, so that output
  k sees only inputs strictly earlier than itself). One broadcast comparison, which
  XLA fuses into the kernel product of `MaskedDense`.

  Args:
    in_degrees: [I] integer degrees of the layer's inputs.
    out_degrees: [O] integer degrees of the layer's outputs.
    strict: use > instead of >=.
    dtype: dtype of the returned mask.

  Returns:
    [I, O] mask of 0s and 1s in `dtype`.
  """
  rows, cols = in_degrees[:, None], out_degrees[None, :]
  allowed = cols > rows if strict else cols >= rows
  return allowed.astype(dtype)


class MaskedDense(nn.Module):
  """y = x @ (W * M) + b, with the mask M given at call time.

  Parameters are stored in `param_dtype`; the kernel, the mask and the input are
  cast to `dtype` for the product. The mask is an argument rather than a field so a
  model can draw a new connectivity each step (MADE's connectivity-agnostic
  training) inside one compiled function.
  """
  features: int
  use_bias: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    """Applies the masked layer.

    Args:
      x: [..., I] floating inputs.
      mask: [I, features] 0/1 (or any real) weights multiplying the kernel.

    Returns:
      [..., features] in `dtype`.
    """
    kernel = self.param('kernel', self.kernel_init, (x.shape[-1], self.features),
                        self.param_dtype)
    if mask.shape != kernel.shape:
      raise ValueError(f'mask shape {mask.shape} does not match kernel shape {kernel.shape}.')
    kernel = kernel.astype(self.dtype) * mask.astype(self.dtype)
    y = jnp.dot(x.astype(self.dtype), kernel)
    if self.use_bias:
      bias = self.param('bias', self.bias_init, (self.features,), self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y
