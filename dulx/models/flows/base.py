"""What every flow keeps, and the pieces that turn a flow into a model of discrete data.

The flow contract (DESIGN.md): a flow is a `flax.linen` Module with

    forward(x, ...) -> (z, logdet)    data -> noise, logdet = log |det dz/dx|, [B]
    inverse(z, ...) -> (x, logdet)    noise -> data, logdet = log |det dx/dz|, [B]

so that `inverse(forward(x)[0])[0] == x` and the two logdets of a round trip sum to
zero. Layers, permutations, squeeze and multi-scale factor-out are flows too; a
composition sums its layers' logdets. A flow *model* adds a base density and
`log_prob(x, y=None, *, train=False) -> [B]` and `sample(rng, num, y, temperature)`.

Discrete data (images of L levels) become continuous in three steps, each with its
log-Jacobian counted, so that the reported NLL is an upper bound on -log P(x) of the
discrete data and bits/dim compare with the literature (Theis et al. 2016, "A note on
the evaluation of generative models"; Dinh et al. 2017, "Density estimation using
Real NVP", Sec. 4.1; Ho et al. 2019, "Flow++", Sec. 3.1):

    v = (x + u) / L,  u in [0, 1)^D          dequantize: log P(x) >= E_q[log p(v) - D log L - log q(u | x)]
    s = alpha + (1 - 2 alpha) v               keep away from 0 and 1
    w = logit(s)                              the flow's input, unbounded

`uniform` dequantization has q = U[0, 1)^D (log q = 0); `variational` dequantization
learns q(u | x) with a flow of its own and subtracts its log-density.
"""

import math

import jax
import jax.numpy as jnp

__all__ = ['dequantize_uniform', 'discrete_log_prob_offset', 'logit_preprocess',
           'logit_postprocess', 'standard_normal_log_prob', 'standard_logistic_log_prob',
           'levels_from_unit']


def dequantize_uniform(rng: jax.Array, x: jax.Array, num_levels: int) -> jax.Array:
  """v = (x + u) / L with u ~ U[0, 1): [B, ...] int levels -> float32 in [0, 1).

  The density of v on [0, 1)^D relates to that of x + u on [0, L)^D by the constant
  factor L^D; `discrete_log_prob_offset` accounts for it.
  """
  u = jax.random.uniform(rng, x.shape, jnp.float32)
  return (x.astype(jnp.float32) + u) / num_levels


def discrete_log_prob_offset(num_dims: int, num_levels: int) -> float:
  """-D log L: log p of (x + u) on [0, L)^D = log p(v) on [0, 1)^D - D log L."""
  return -num_dims * math.log(num_levels)


def logit_preprocess(v: jax.Array, alpha: float = 0.05) -> tuple[jax.Array, jax.Array]:
  """w = logit(alpha + (1 - 2 alpha) v) and its log-Jacobian (Dinh et al. 2017, Sec. 4.1).

  Args:
    v: [B, ...] float in [0, 1).
    alpha: in [0, 0.5): keeps s = alpha + (1 - 2 alpha) v inside (0, 1).

  Returns:
    w: [B, ...] float32, and logdet [B] = sum log |dw/dv|
      = sum [log(1 - 2 alpha) - log s - log(1 - s)].
  """
  s = alpha + (1.0 - 2.0 * alpha) * v.astype(jnp.float32)
  w = jnp.log(s) - jnp.log1p(-s)
  logdet = math.log(1.0 - 2.0 * alpha) - jnp.log(s) - jnp.log1p(-s)
  return w, logdet.reshape(v.shape[0], -1).sum(axis=-1)


def logit_postprocess(w: jax.Array, alpha: float = 0.05) -> jax.Array:
  """The inverse of `logit_preprocess`: v = (sigmoid(w) - alpha) / (1 - 2 alpha), clipped to [0, 1)."""
  v = (jax.nn.sigmoid(w.astype(jnp.float32)) - alpha) / (1.0 - 2.0 * alpha)
  return jnp.clip(v, 0.0, jnp.nextafter(jnp.float32(1), jnp.float32(0)))


def levels_from_unit(v: jax.Array, num_levels: int) -> jax.Array:
  """floor(v * L) as int32 levels in [0, L): the discrete datum a dequantized v came from."""
  return jnp.clip(jnp.floor(v * num_levels), 0, num_levels - 1).astype(jnp.int32)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
  """log N(z; 0, I) summed over all but the batch axis: [B, ...] -> [B] float32."""
  z = z.astype(jnp.float32)
  per_dim = -0.5 * (z * z + math.log(2.0 * math.pi))
  return per_dim.reshape(z.shape[0], -1).sum(axis=-1)


def standard_logistic_log_prob(z: jax.Array) -> jax.Array:
  """log of the standard logistic density, -softplus(z) - softplus(-z), summed: [B, ...] -> [B].

  NICE's prior on MNIST (Dinh et al. 2015, Sec. 3.4): heavier tails than the
  Gaussian give larger gradients to points far from the mode.
  """
  z = z.astype(jnp.float32)
  per_dim = -jax.nn.softplus(z) - jax.nn.softplus(-z)
  return per_dim.reshape(z.shape[0], -1).sum(axis=-1)
