"""Bernoulli and categorical likelihoods over discrete data.

Both are parameterised by logits and computed in float32 whatever the dtype the
logits arrive in, so a bfloat16 network still has an fp32 loss.

The shape of the logits says which one is meant, so models and samplers can stay
generic:

- Bernoulli: `logits` has the shape of `x` (one logit per dimension, x in {0, 1}).
- Categorical: `logits` has one more trailing axis of size L (x in {0..L-1}).
"""

import jax
import jax.numpy as jnp

__all__ = ['bernoulli_log_prob', 'categorical_log_prob', 'log_prob', 'sample']


def bernoulli_log_prob(logits: jax.Array, x: jax.Array) -> jax.Array:
  """log p(x) elementwise for x in {0, 1}: x*log(sigmoid(l)) + (1-x)*log(sigmoid(-l))."""
  logits = logits.astype(jnp.float32)
  x = x.astype(jnp.float32)
  return x * jax.nn.log_sigmoid(logits) + (1.0 - x) * jax.nn.log_sigmoid(-logits)


def categorical_log_prob(logits: jax.Array, x: jax.Array) -> jax.Array:
  """log softmax(logits)[x] elementwise; logits: [..., L], x: [...] ints in [0, L)."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp, x.astype(jnp.int32)[..., None], axis=-1)[..., 0]


def _is_categorical(logits: jax.Array, x_ndim: int) -> bool:
  if logits.ndim == x_ndim:
    return False
  if logits.ndim == x_ndim + 1:
    return True
  raise ValueError(
      f'logits of rank {logits.ndim} do not fit data of rank {x_ndim}: expected '
      f'rank {x_ndim} (Bernoulli) or {x_ndim + 1} (categorical).')


def log_prob(logits: jax.Array, x: jax.Array) -> jax.Array:
  """Elementwise log p(x); Bernoulli or categorical by the rank of `logits`.

  Args:
    logits: [*S] (Bernoulli) or [*S, L] (categorical).
    x: [*S] integer levels.

  Returns:
    [*S] float32 log-probabilities in nats.
  """
  if _is_categorical(logits, x.ndim):
    return categorical_log_prob(logits, x)
  return bernoulli_log_prob(logits, x)


def sample(rng: jax.Array, logits: jax.Array, *, categorical: bool,
           temperature: float = 1.0) -> jax.Array:
  """Draws x ~ p(. | logits / temperature); int32 with the shape of the data.

  Args:
    rng: a PRNG key.
    logits: [*S] Bernoulli logits, or [*S, L] categorical logits.
    categorical: which of the two the logits parameterise.
    temperature: > 0; divides the logits (1 samples the model's own distribution).

  Returns:
    [*S] int32 levels.
  """
  logits = logits.astype(jnp.float32) / temperature
  if categorical:
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)
  return jax.random.bernoulli(rng, jax.nn.sigmoid(logits)).astype(jnp.int32)
