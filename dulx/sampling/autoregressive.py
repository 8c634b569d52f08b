"""Autoregressive sampling, naive and cached, over one contract.

A model generates its D dimensions in the order `model.ordering()` ([D] flat indices,
C order over `event_shape`), `dims_per_step` = k of them per step (default 1), so
step t draws the dims o[t k : (t + 1) k]; their outputs may depend only on the dims
of earlier steps (with k > 1 the model is autoregressive over steps). A step's draw goes through two methods
that a model may define (the defaults fit models with per-dimension logits):

  step_outputs(outputs, dims) -> step_out   the part of the teacher-forced outputs
      that parameterises the dims `dims` ([k] int32). Default: the outputs
      [B, *event_shape, *rest] flattened to [B, D, *rest] and gathered at `dims`,
      [B, k, *rest] (rest: () for Bernoulli logits, (L,) for categorical).
  draw_step(step_out, rng, temperature) -> [B, k] int32
      draws those dims. Default: Bernoulli or categorical from the logits' rank.
      A model whose dims within a step are coupled (PixelCNN++'s channels share one
      mixture component) draws them jointly here.

Naive sampling (`sample`): step t runs the whole network on the partly drawn x
(D / k passes, each as costly as a training forward pass), in a fixed-size
`lax.fori_loop`, so the sampler compiles once per (model, num).

Cached sampling (`sample_cached`, Ramachandran et al. 2017, "Fast Generation for
Convolutional Autoregressive Models"; the KV cache of transformers): a model with a
method

  decode(x, t, y) -> step_out        applied with mutable=['cache']

computes step t's outputs from x (dims of steps < t drawn) in O(layers) work,
reading only what it has not yet seen from x and keeping the rest in its 'cache'
collection (created by the call at t = 0). Both samplers draw step t with the key
fold_in(rng, t) through the same `draw_step`, so for the same rng they return the
same samples (up to float rounding deciding a draw, which the tests show does not
happen at their seeds).
"""

from collections.abc import Callable
import functools
import math
import numbers
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dulx import distributions
from dulx.errors import ConfigError

__all__ = ['check_request', 'check_temperature', 'dims_per_step', 'draw_step', 'sample', 'sample_cached',
           'step_outputs', 'supports_cache']


def check_temperature(temperature: Any) -> None:
  """ConfigError unless a concrete temperature is finite and > 0 (at infinity a flow's
  latent, and so its sample, would be Inf); a traced one passes unchecked."""
  if isinstance(temperature, numbers.Real) and not 0 < temperature < math.inf:
    raise ConfigError(f'--temperature must be a finite number > 0, got {temperature}.')


def check_request(num: Any, temperature: Any) -> int:
  """num as an int; ConfigError unless it is >= 1 and `check_temperature` passes."""
  if isinstance(num, bool) or not isinstance(num, numbers.Integral) or num < 1:
    raise ConfigError(f'the number of samples must be an integer >= 1, got {num!r}.')
  check_temperature(temperature)
  return int(num)


def dims_per_step(model: nn.Module) -> int:
  """k, the number of dims one step draws (the model's `dims_per_step`, default 1)."""
  return int(getattr(model, 'dims_per_step', 1))


def supports_cache(model: nn.Module) -> bool:
  """Whether the model has a cached `decode` step (see the module docstring)."""
  return callable(getattr(model, 'decode', None))


def step_outputs(model: nn.Module, outputs: jax.Array, dims: jax.Array) -> jax.Array:
  """The outputs that parameterise `dims` ([k] int32): the model's own, or [B, k, *rest]."""
  if callable(getattr(model, 'step_outputs', None)):
    return model.step_outputs(outputs, dims)
  rank = len(model.event_shape)
  flat = outputs.reshape(outputs.shape[0], math.prod(model.event_shape), *outputs.shape[1 + rank:])
  return flat[:, dims]


def draw_step(model: nn.Module, step_out: jax.Array, rng: jax.Array,
              temperature: jax.Array) -> jax.Array:
  """[B, k] int32 draws of one step: the model's own `draw_step`, or from logits."""
  if callable(getattr(model, 'draw_step', None)):
    return model.draw_step(step_out, rng, temperature)
  return distributions.sample(rng, step_out, categorical=step_out.ndim == 3,
                              temperature=temperature)


def _writer(model: nn.Module, rng: jax.Array, temperature: jax.Array,
            given_mask: jax.Array) -> tuple[int, Callable, Callable]:
  """(number of steps, dims of step t, write(t, x, step_out) -> x with step t drawn)."""
  num_dims, k = math.prod(model.event_shape), dims_per_step(model)
  if num_dims % k:
    raise ValueError(f'dims_per_step={k} does not divide the {num_dims} dims.')
  order = jnp.asarray(model.ordering(), jnp.int32)
  keep = given_mask.reshape(given_mask.shape[0], num_dims)

  def dims_of(t):
    return jax.lax.dynamic_slice(order, (t * k,), (k,))

  def write(t, x, step_out):
    dims = dims_of(t)
    drawn = draw_step(model, step_out, jax.random.fold_in(rng, t), temperature)
    flat = x.reshape(x.shape[0], num_dims)
    flat = flat.at[:, dims].set(jnp.where(keep[:, dims], flat[:, dims], drawn))
    return flat.reshape(x.shape)

  return num_dims // k, dims_of, write


@functools.partial(jax.jit, static_argnames=('model',))
def _sample(model: nn.Module, variables: Any, rng: jax.Array, y: jax.Array | None,
            temperature: jax.Array, given: jax.Array, given_mask: jax.Array) -> jax.Array:
  num_steps, dims_of, write = _writer(model, rng, temperature, given_mask)

  def step(t, x):
    return write(t, x, step_outputs(model, model.apply(variables, x, y), dims_of(t)))

  return jax.lax.fori_loop(0, num_steps, step, given)


@functools.partial(jax.jit, static_argnames=('model',))
def _sample_cached(model: nn.Module, variables: Any, rng: jax.Array, y: jax.Array | None,
                   temperature: jax.Array, given: jax.Array, given_mask: jax.Array) -> jax.Array:
  num_steps, _, write = _writer(model, rng, temperature, given_mask)
  step_out, cache = model.apply(variables, given, 0, y, method='decode', mutable=['cache'])
  x = write(0, given, step_out)

  def step(t, carry):
    x, cache = carry
    step_out, cache = model.apply({**variables, **cache}, x, t, y, method='decode',
                                  mutable=['cache'])
    return write(t, x, step_out), cache

  x, _ = jax.lax.fori_loop(1, num_steps, step, (x, cache))
  return x


def _prepare(model: nn.Module, num: Any, temperature: Any, given: jax.Array | None,
             given_mask: jax.Array | None) -> tuple[jax.Array, jax.Array, jax.Array]:
  num = check_request(num, temperature)
  if (given is None) != (given_mask is None):
    raise ValueError('completion needs both `given` and `given_mask`.')
  shape = (num, *model.event_shape)
  if given is None:
    given, given_mask = jnp.zeros(shape, jnp.int32), jnp.zeros(shape, bool)
  elif given.shape != shape:
    raise ValueError(f'given has shape {given.shape}; expected {shape}.')
  given_mask = jnp.broadcast_to(jnp.asarray(given_mask, bool), shape)
  return jnp.asarray(temperature, jnp.float32), jnp.asarray(given, jnp.int32), given_mask


def sample(model: nn.Module, variables: Any, rng: jax.Array, num: int, *,
           y: jax.Array | None = None, temperature: float = 1.0,
           given: jax.Array | None = None, given_mask: jax.Array | None = None) -> jax.Array:
  """Draws `num` examples from an autoregressive model, one full pass per step.

  Positions where `given_mask` is true keep their value from `given` (completion of a
  partly observed image); the others are drawn in the model's order.

  Args:
    model: an autoregressive Module with `event_shape`, `num_levels`, `ordering()`
      (and optionally `dims_per_step`, `step_outputs`, `draw_step`); hashable (a
      static argument of the compiled sampler).
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
  temperature, given, given_mask = _prepare(model, num, temperature, given, given_mask)
  return _sample(model, variables, rng, y, temperature, given, given_mask)


def sample_cached(model: nn.Module, variables: Any, rng: jax.Array, num: int, *,
                  y: jax.Array | None = None, temperature: float = 1.0,
                  given: jax.Array | None = None,
                  given_mask: jax.Array | None = None) -> jax.Array:
  """As `sample`, through the model's cached `decode` step: O(layers) work per step.

  Returns the samples `sample` returns for the same arguments.

  Raises:
    ValueError: the model has no `decode` method.
  """
  if not supports_cache(model):
    raise ValueError(f'{type(model).__name__} has no cached decode step; use `sample`.')
  temperature, given, given_mask = _prepare(model, num, temperature, given, given_mask)
  return _sample_cached(model, variables, rng, y, temperature, given, given_mask)
