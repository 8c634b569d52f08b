"""Importance-weighted likelihood bounds: a tighter NLL from a stochastic bound.

A flow on dequantized data scores x with one draw of its dequantization noise,

  b(u) = log p(x + u) - log q(u | x),   u ~ q(. | x)

(q uniform, or a variational dequantizer; `dulx.models.flows.base`), whose
expectation is a lower bound on log P(x) = log E_q[exp b(u)]. K independent draws
give the importance-weighted bound (Burda et al. 2016, there for VAEs)

  L_K(x) = log (1/K) sum_k exp b(u_k),

with E[L_1] <= E[L_K] <= E[L_{K+1}] <= log P(x) and L_K -> log P(x) as K grows
(for bounded weights exp b / P). L_1 is the usual one-draw estimate.
"""

from collections.abc import Callable
import math

import jax
import jax.numpy as jnp

__all__ = ['draw_keys', 'importance_weighted']


def draw_keys(rng: jax.Array, num_samples: int) -> jax.Array:
  """[K] keys of the K draws: `rng` itself first, then fold_in(rng, k) for k = 1..K-1.

  Draw 0 uses `rng`, so L_1 is exactly the one-draw evaluation with the same key.
  """
  keys = jax.vmap(lambda k: jax.random.fold_in(rng, k))(jnp.arange(num_samples))
  return keys.at[0].set(rng)


def importance_weighted(bound_fn: Callable[[jax.Array], jax.Array], rng: jax.Array,
                        num_samples: int) -> jax.Array:
  """L_K: log of the mean of exp(bound_fn(key)) over the K keys of `draw_keys`.

  Args:
    bound_fn: key -> [B] one-draw bound b(u) in nats, its noise drawn from the key.
    rng: the first draw's key.
    num_samples: K >= 1; the draws run one after another (memory of one pass).

  Returns:
    [B] float32 L_K in nats.
  """
  if num_samples < 1:
    raise ValueError(f'num_samples must be >= 1, got {num_samples}.')
  if num_samples == 1:  # Exactly the one-draw evaluation (logsumexp would round it).
    return bound_fn(rng)
  draws = jax.lax.map(bound_fn, draw_keys(rng, num_samples))  # [K, B]
  return jax.nn.logsumexp(draws.astype(jnp.float32), axis=0) - math.log(num_samples)
