"""Sampling from trained models: one entry point for every likelihood model.

`sample` uses a model's own `sample` method where it has one (models that draw
directly, such as the histogram and the flows), else the autoregressive sampler:
cached where the model has a `decode` step, naive otherwise (`method` chooses).
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dulx.sampling import autoregressive

__all__ = ['autoregressive', 'sample']


@functools.partial(jax.jit, static_argnames=('model', 'num'))
def _direct(model: nn.Module, variables: Any, rng: jax.Array, num: int,
            y: jax.Array | None, temperature: jax.Array) -> jax.Array:
  return model.apply(variables, rng, num, y, temperature, method='sample')


def sample(model: nn.Module, variables: Any, rng: jax.Array, num: int,
           method: str = 'auto', **options: Any) -> jax.Array:
  """Draws `num` examples: [num, *model.event_shape] (int32 levels for discrete data).

  Args:
    model: a likelihood Module; with a `sample(rng, num, y, temperature)` method it
      samples itself, else it must be autoregressive (see `autoregressive`).
    variables: its variables, e.g. {'params': ...}.
    rng: a PRNG key.
    num: number of examples.
    method: for autoregressive models, 'naive', 'cached', or 'auto' (cached where
      the model supports it); both give the same samples.
    **options: y, temperature, and for autoregressive models given, given_mask.
  """
  if method not in ('auto', 'naive', 'cached'):
    raise ValueError(f"method must be 'auto', 'naive' or 'cached', got {method!r}.")
  if callable(getattr(model, 'sample', None)):
    y, temperature = options.pop('y', None), options.pop('temperature', 1.0)
    if options:
      raise ValueError(f'{type(model).__name__} samples directly and takes only y and '
                       f'temperature, not {", ".join(sorted(options))}.')
    num = autoregressive.check_request(num, temperature)
    return _direct(model, variables, rng, num, y, jnp.asarray(temperature, jnp.float32))
  if method == 'cached' or (method == 'auto' and autoregressive.supports_cache(model)):
    return autoregressive.sample_cached(model, variables, rng, num, **options)
  return autoregressive.sample(model, variables, rng, num, **options)
