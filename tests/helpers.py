"""Checks shared by the model tests: exhaustive supports, causality, fitting, chi-square."""

from collections.abc import Callable
import contextlib
import functools
import io
import itertools
import math
import re
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.ad_checkpoint import print_saved_residuals
from scipy import stats

from dulx import sampling
from dulx.data import DatasetInfo


def dataset_info(shape: tuple[int, ...], num_levels: int | None,
                 num_classes: int | None = None) -> DatasetInfo:
  """Metadata of a made-up dataset, for builders."""
  return DatasetInfo(spec='test', split='train', shape=tuple(shape), num_levels=num_levels,
                     num_classes=num_classes)


def random_variables(model, seed: int = 0, scale: float = 0.3) -> dict:
  """Variables of `model` with every parameter drawn from N(0, scale^2).

  Drawn with NumPy on the shapes of `model.init` (traced, not compiled), which
  keeps tests free of the XLA compilation of an init function per model. The
  model needs `event_shape` and `num_classes` fields (the model contract).
  """
  x = jnp.zeros((1, *model.event_shape), jnp.int32)
  y = None if model.num_classes is None else jnp.zeros([1], jnp.int32)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, y)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype), shapes)


def assert_dropout_only_in_training(model, x: jax.Array) -> None:
  """`model` (with a `dropout` field > 0) is deterministic in evaluation, random in training.

  Evaluation equals the same model without dropout; two training passes with other
  'dropout' keys differ from it and from each other.
  """
  variables = random_variables(model, scale=0.5)
  evaluation = model.apply(variables, x)
  np.testing.assert_array_equal(evaluation, model.clone(dropout=0.0).apply(variables, x))
  training = [model.apply(variables, x, train=True, rngs={'dropout': jax.random.PRNGKey(seed)})
              for seed in (0, 1)]
  assert not np.allclose(training[0], evaluation) and not np.allclose(*training)


def all_points(event_shape: tuple[int, ...], num_levels: int) -> np.ndarray:
  """Every point of {0..L-1}^event_shape: int32 [L**D, *event_shape], C order.

  E.g. all_points((2, 2, 1), 2) holds the 16 binary 2x2 images.
  """
  num_dims = math.prod(event_shape)
  points = np.array(list(itertools.product(range(num_levels), repeat=num_dims)), np.int32)
  return points.reshape(-1, *event_shape)


def assert_normalised(log_prob_fn: Callable[[jax.Array], jax.Array],
                      event_shape: tuple[int, ...], num_levels: int, atol: float = 1e-5) -> None:
  """sum_x exp(log_prob_fn(x)) over the whole support is 1 to `atol`.

  log_prob_fn: [N, *event_shape] int32 -> [N] log-probabilities.
  """
  log_probs = np.asarray(log_prob_fn(jnp.asarray(all_points(event_shape, num_levels))), np.float64)
  assert np.all(np.isfinite(log_probs)), 'non-finite log-probabilities'
  total = np.exp(log_probs).sum()
  assert abs(total - 1.0) <= atol, f'probabilities sum to {total!r}, not 1'


def dependency_matrix(fn: Callable[..., jax.Array], inputs: jax.Array, *args: Any) -> np.ndarray:
  """Which outputs depend on which inputs, by the Jacobian at each example.

  Args:
    fn: (u [B, *S] float, *args) -> [B, *S] or [B, *S, L], examples independent of
      each other. The Jacobian is compiled once per `fn` object: pass what varies
      between calls (e.g. a mask index) in `args`, which are traced.
    inputs: [B, *S] float points at which to differentiate; several points make
      a dependence hidden by a dead ReLU at one point unlikely to be missed.
    *args: further arguments of fn (arrays or Python scalars).

  Returns:
    [D, D] bool, D = prod(S) flat in C order: entry [j, i] is True iff some
    d output_j / d input_i (over examples and levels) is nonzero.
  """
  num_dims = math.prod(inputs.shape[1:])
  jacobian = np.asarray(_jacobians(fn, inputs, *args), np.float64)
  return np.abs(jacobian.reshape(inputs.shape[0], num_dims, -1, num_dims)).sum(axis=(0, 2)) > 0


@functools.partial(jax.jit, static_argnums=0)
def _jacobians(fn, inputs, *args):
  return jax.vmap(jax.jacrev(lambda u: fn(u[None], *args)[0]))(inputs)


def assert_autoregressive(dependency: np.ndarray, ordering: np.ndarray, *,
                          dense: bool = False) -> None:
  """Output j depends only on inputs strictly earlier than j in `ordering`.

  Args:
    dependency: [D, D] bool from `dependency_matrix`.
    ordering: [D] flat dims in generation order.
    dense: also require every allowed dependence to be present.
  """
  rank = np.argsort(ordering)
  allowed = rank[None, :] < rank[:, None]
  illegal = np.argwhere(dependency & ~allowed)
  assert illegal.size == 0, (
      f'output j depends on a later or equal input i at (j, i) = {illegal.tolist()}')
  assert dependency.any(), 'no output depends on any input: the check would pass vacuously'
  if dense:
    missing = np.argwhere(allowed & ~dependency)
    assert missing.size == 0, f'allowed dependences missing at (j, i) = {missing.tolist()}'


def fit_adam(loss_fn: Callable[[optax.Params, jax.Array], jax.Array], params: optax.Params,
             rng: jax.Array, *, num_steps: int,
             learning_rate: float) -> tuple[optax.Params, np.ndarray]:
  """num_steps of Adam on loss_fn(params, rng_t), compiled as one scan.

  Returns:
    The final params and the [num_steps] losses before each step.
  """
  tx = optax.adam(learning_rate)

  def step(carry, t):
    params, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(params, jax.random.fold_in(rng, t))
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  run = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), jnp.arange(num_steps)))
  (params, _), losses = run(params)
  return params, np.asarray(losses)


def noisy_stripes(num: int = 64, seed: int = 0) -> jax.Array:
  """[num, 4, 4, 1] int32 binary images to fit: vertical and horizontal stripes in turn,
  each pixel flipped with probability 0.05."""
  stripes = np.zeros((2, 4, 4, 1), np.int32)
  stripes[0, :, ::2], stripes[1, ::2] = 1, 1
  noise = np.random.default_rng(seed).uniform(size=(num, 4, 4, 1)) < 0.05
  return jnp.asarray(stripes[np.arange(num) % 2] ^ noise, jnp.int32)


def assert_learns_stripes(model, *, ratio: float = 0.7, num_samples: int = 3,
                          learning_rate: float = 1e-2) -> None:
  """40 Adam steps on `noisy_stripes` (a binary 4x4x1 `model`) bring the mean NLL below
  `ratio` times its start; then `num_samples` samples (none for 0) are binary levels."""
  x, rng = noisy_stripes(), jax.random.PRNGKey(0)
  params = jax.jit(model.init)(rng, x[:1])['params']
  nll = lambda p, _: -model.apply({'params': p}, x, method='log_prob').mean()
  params, losses = fit_adam(nll, params, rng, num_steps=40, learning_rate=learning_rate)
  assert losses[-1] < ratio * losses[0], losses
  if num_samples:
    samples = sampling.sample(model, {'params': params}, jax.random.PRNGKey(1), num_samples)
    chex.assert_shape(samples, (num_samples, 4, 4, 1))
    assert samples.dtype == jnp.int32 and set(np.unique(samples)) <= {0, 1}


def assert_bfloat16_matches_float32(model) -> None:
  """A bfloat16-compute `model` over 4x4x3 images of 4 levels keeps float32 parameters
  and a finite float32 log_prob within 1% of the float32 model's."""
  x = jnp.asarray(np.random.default_rng(0).integers(0, 4, (8, 4, 4, 3)), jnp.int32)
  variables = random_variables(model, scale=0.2)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  log_prob_fn = lambda m: jax.jit(lambda v: m.apply(v, x, method='log_prob'))(variables)
  log_prob = log_prob_fn(model)
  assert log_prob.dtype == jnp.float32
  chex.assert_tree_all_finite(log_prob)
  # 48 sub-pixels of about log(4) = 1.4 nats each; bf16 keeps ~3 significant digits.
  np.testing.assert_allclose(log_prob, log_prob_fn(model.clone(dtype=jnp.float32)), rtol=0.01)


def assert_frequencies_match(samples: np.ndarray, probs: np.ndarray, num_levels: int,
                             p_value: float = 1e-4) -> None:
  """Pearson's chi-square test that samples follow the table `probs`.

  Args:
    samples: [N, *event_shape] int levels.
    probs: [L] * D probabilities of each point (C order), summing to 1.
    num_levels: L.
    p_value: the test fails only if data this extreme had probability < p_value
      under `probs` (with fixed seeds the test is deterministic).
  """
  flat = samples.reshape(samples.shape[0], -1).astype(np.int64)
  index = flat @ (num_levels ** np.arange(flat.shape[1] - 1, -1, -1))
  counts = np.bincount(index, minlength=probs.size)
  expected = samples.shape[0] * np.asarray(probs, np.float64).reshape(-1)
  assert np.all(counts[expected == 0] == 0), 'samples fall on points of probability 0'
  support = expected > 0
  statistic = np.sum((counts[support] - expected[support])**2 / expected[support])
  threshold = stats.chi2.ppf(1.0 - p_value, support.sum() - 1)
  assert statistic < threshold, f'chi-square {statistic:.1f} >= {threshold:.1f}'


def assert_cached_sampling_equals_naive(model, variables: Any, given_mask: np.ndarray, *,
                                        num: int = 64, seed: int = 7,
                                        all_levels: bool = False) -> None:
  """The cached sampler draws exactly the naive sampler's samples, fresh and completing.

  For one rng: the two samplers return the same valid levels ([num, *event_shape]
  int32 in [0, L)), not stuck on one level (on every level with `all_levels`); and,
  completing random given values where `given_mask` (broadcastable to the samples)
  is true, they again agree, keep every given value and draw the others.
  Class-conditional models get the labels 0, 1, 2, ... in turn.
  """
  rng, shape = jax.random.PRNGKey(seed), (num, *model.event_shape)
  y = None if model.num_classes is None else jnp.arange(num) % model.num_classes
  draw = lambda method, **given: np.asarray(sampling.sample(model, variables, rng, num, y=y,
                                                            method=method, **given))
  naive = draw('naive')
  np.testing.assert_array_equal(naive, draw('cached'))
  assert naive.dtype == np.int32 and naive.shape == shape, (naive.dtype, naive.shape)
  assert 0 <= naive.min() and naive.max() < model.num_levels
  levels = len(np.unique(naive))
  assert levels == model.num_levels if all_levels else levels > 1, f'{levels} levels drawn'
  given = np.random.default_rng(seed).integers(0, model.num_levels, shape).astype(np.int32)
  kept = np.broadcast_to(np.asarray(given_mask, bool), shape)
  completed = draw('cached', given=jnp.asarray(given), given_mask=jnp.asarray(kept))
  np.testing.assert_array_equal(completed, draw('naive', given=jnp.asarray(given),
                                                given_mask=jnp.asarray(kept)))
  np.testing.assert_array_equal(completed[kept], given[kept])
  assert np.any(completed[~kept] != given[~kept]), 'the completion drew nothing'


def keeps_attention_weights(loss: Callable[..., jax.Array], *args, length: int) -> bool:
  """Whether the gradient of `loss(*args)` keeps a [..., length, length] array computed
  from the arguments (attention weights over `length` positions, batched), by the
  residuals JAX saves for the backward pass. Constants (causal masks) do not count.
  """
  with contextlib.redirect_stdout(io.StringIO()) as out:
    print_saved_residuals(loss, *args)
  weights = re.compile(rf'\[(\d+,)+{length},{length}\]')
  return any(weights.search(line) and 'from a constant' not in line
             for line in out.getvalue().splitlines())


def assert_remat_attention_keeps_less_and_computes_the_same(model, x, y, length: int) -> None:
  """`model.clone(remat_attention=True)` has the training loss (dropout included) and
  gradients of `model` (remat_attention off), and keeps no [B, H, T, T] attention
  weights (T = `length`) for the backward pass where `model` does."""
  variables = random_variables(model, scale=0.3)
  remat = model.clone(remat_attention=True)

  def value_and_grad(m):
    loss = lambda p: -m.apply({'params': p}, x, y, train=True, method='log_prob',
                              rngs={'dropout': jax.random.PRNGKey(4)}).mean()
    return jax.jit(jax.value_and_grad(loss))(variables['params'])

  (value, grads), (remat_value, remat_grads) = value_and_grad(model), value_and_grad(remat)
  np.testing.assert_allclose(remat_value, value, rtol=1e-6)
  chex.assert_trees_all_close(remat_grads, grads, rtol=1e-5, atol=1e-6)
  for m, kept in ((model, True), (remat, False)):  # Every attention layer gets the option.
    loss = lambda v: m.apply(v, x, y, method='log_prob').sum()
    assert keeps_attention_weights(loss, variables, length=length) == kept
