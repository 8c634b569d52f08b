"""Naive autoregressive sampling: one full teacher-forced pass per dimension.

For a model whose outputs are the conditionals p(x_d | x_<d) in an ordering
o_1..o_D, x is drawn one dimension at a time: at step t the whole network runs on
the partly drawn x and only position o_t is sampled and written. D passes in all,
each as costly as one training forward pass (no caching), in a fixed-size
`lax.fori_loop` so the sampler compiles once per (model, num).
"""

import functools
import math
import numbers
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dulx import distributions
from dulx.errors import ConfigError

__all__ = ['check_request', 'sample']


def check_request(num: Any, temperature: Any) -> int:
  """num as an int; ConfigError unless it is >= 1 and a concrete temperature is > 0."""
  if isinstance(num, bool) or not isinstance(num, numbers.Integral) or num < 1:
    raise ConfigError(f'the number of samples must be an integer >= 1, got {num!r}.')
  if isinstance(temperature, numbers.Real) and not temperature > 0:
    raise ConfigError(f'--temperature must be > 0, got {temperature}.')
  return int(num)


@functools.partial(jax.jit, static_argnames=('model', 'num'))
def _sample(model: nn.Module, variables: Any, rng: jax.Array, num: int, y: jax.Array | None,
            temperature: jax.Array, given: jax.Array, given_mask: jax.Array) -> jax.Array:
  num_dims = math.prod(model.event_shape)
  order = jnp.asarray(model.ordering(), jnp.int32)
  keep = given_mask.reshape(num, num_dims)

  def step(t, x):
    dim = order[t]
    logits = model.apply(variables, x, y)
    logits = logits.reshape(num, num_dims, *logits.shape[1 + len(model.event_shape):])
    drawn = distributions.sample(jax.random.fold_in(rng, t), logits[:, dim],
                                 categorical=logits.ndim == 3, temperature=temperature)
    flat = x.reshape(num, num_dims)
    flat = flat.at[:, dim].set(jnp.where(keep[:, dim], flat[:, dim], drawn))
    return flat.reshape(x.shape)

  return jax.lax.fori_loop(0, num_dims, step, given)


def sample(model: nn.Module, variables: Any, rng: jax.Array, num: int, *,
           y: jax.Array | None = None, temperature: float = 1.0,
           given: jax.Array | None = None, given_mask: jax.Array | None = None) -> jax.Array:
  """Draws `num` examples from an autoregressive model, dimension by dimension.

  Step t (t = 0..D-1) runs `model.apply(variables, x, y)` and samples position
  `model.ordering()[t]` from its logits / temperature; positions where `given_mask`
  is true keep their value from `given` (completion of a partly observed image).

  Args:
    model: an autoregressive Module with `event_shape`, `num_levels`, `ordering()`;
      hashable (a static argument of the compiled sampler).
    variables: its variables, e.g. {'params': ...}.
    rng: a PRNG key.
    num: number of examples (>= 1).
    y: [num] int labels for a class-conditional model.
    temperature: > 0; divides every conditional's logits.
    given: [num, *event_shape] int levels to complete (needs given_mask).
    given_mask: bool, [num, *event_shape] or broadcastable to it: True where `given`
      is kept.

  Returns:
    [num, *event_shape] int32 levels in [0, model.num_levels).
  """
  num = check_request(num, temperature)
  if (given is None) != (given_mask is None):
    raise ValueError('completion needs both `given` and `given_mask`.')
  shape = (num, *model.event_shape)
  if given is None:
    given, given_mask = jnp.zeros(shape, jnp.int32), jnp.zeros(shape, bool)
  elif given.shape != shape:
    raise ValueError(f'given has shape {given.shape}; expected {shape}.')
  given_mask = jnp.broadcast_to(jnp.asarray(given_mask, bool), shape)
  return _sample(model, variables, rng, num, y, jnp.asarray(temperature, jnp.float32),
                 jnp.asarray(given, jnp.int32), given_mask)
