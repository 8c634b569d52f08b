"""Samplers: the naive autoregressive sampler on MADE, and direct sampling of the histogram."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dulx import sampling
from dulx.errors import ConfigError
from dulx.models.autoregressive import MADE, Histogram
from tests import helpers


BINARY = MADE(event_shape=(2, 2, 1), num_levels=2, hidden_sizes=(16,), order='random',
              mask_seed=1, likelihood='bernoulli')
CATEGORICAL = MADE(event_shape=(3, 2), num_levels=4, num_classes=2, hidden_sizes=(16,),
                   num_masks=2, order_agnostic=True)


def test_histogram_samples_follow_its_table():
  model = Histogram(event_shape=(2,), num_levels=4)
  variables = helpers.random_variables(model, scale=1.0)
  samples = np.asarray(sampling.sample(model, variables, jax.random.PRNGKey(0), 20000))
  helpers.assert_frequencies_match(samples, np.asarray(model.apply(variables, method='probs')), 4)


def test_conditional_histogram_samples_follow_their_class_table():
  model = Histogram(event_shape=(1,), num_levels=5, num_classes=2)
  variables = helpers.random_variables(model, scale=2.0)
  probs = np.asarray(model.apply(variables, method='probs'))
  for c in range(2):
    samples = sampling.sample(model, variables, jax.random.PRNGKey(c), 5000, y=jnp.full([5000], c))
    helpers.assert_frequencies_match(np.asarray(samples), probs[c], 5)


def test_made_samples_follow_its_joint_distribution():
  variables = helpers.random_variables(BINARY, scale=1.0)
  samples = np.asarray(sampling.sample(BINARY, variables, jax.random.PRNGKey(0), 4000))
  points = helpers.all_points(BINARY.event_shape, 2)
  probs = np.exp(np.asarray(BINARY.apply(variables, points, method='log_prob'), np.float64))
  helpers.assert_frequencies_match(samples, probs / probs.sum(), 2)


def test_first_dimension_follows_the_model_marginal():
  variables = helpers.random_variables(BINARY, seed=3, scale=1.0)
  first = BINARY.ordering()[0]
  logits = BINARY.apply(variables, jnp.zeros((1, 2, 2, 1), jnp.int32)).reshape(-1)
  p = float(jax.nn.sigmoid(logits[first]))
  num = 4000
  samples = sampling.sample(BINARY, variables, jax.random.PRNGKey(1), num)
  frequency = float(samples.reshape(num, -1)[:, first].mean())
  assert abs(frequency - p) < 5 * np.sqrt(p * (1 - p) / num), (frequency, p)


@pytest.mark.parametrize('temperature', [1.0, 0.5, 3.0])
def test_samples_are_levels_of_the_right_shape(temperature):
  variables = helpers.random_variables(CATEGORICAL, scale=1.0)
  y = jnp.array([0, 1, 1, 0, 1])
  samples = sampling.sample(CATEGORICAL, variables, jax.random.PRNGKey(0), 5, y=y,
                            temperature=temperature)
  chex.assert_shape(samples, (5, 3, 2))
  assert samples.dtype == jnp.int32
  assert samples.min() >= 0 and samples.max() < 4


def test_low_temperature_concentrates_samples():
  variables = helpers.random_variables(BINARY, seed=5, scale=1.0)
  def entropy_of_samples(temperature):
    samples = np.asarray(sampling.sample(BINARY, variables, jax.random.PRNGKey(2), 4000,
                                         temperature=temperature)).reshape(4000, -1)
    _, counts = np.unique(samples, axis=0, return_counts=True)
    p = counts / counts.sum()
    return -(p * np.log(p)).sum()
  assert entropy_of_samples(0.1) < 0.5 * entropy_of_samples(1.0)


def test_completion_keeps_given_dimensions():
  variables = helpers.random_variables(CATEGORICAL, scale=1.0)
  given = jnp.asarray(np.random.default_rng(3).integers(0, 4, (64, 3, 2)), jnp.int32)
  given_mask = jnp.array([[True, False], [False, True], [True, False]])
  samples = sampling.sample(CATEGORICAL, variables, jax.random.PRNGKey(4), 64,
                            y=jnp.zeros([64], jnp.int32), given=given, given_mask=given_mask)
  kept = np.broadcast_to(np.asarray(given_mask), samples.shape)
  np.testing.assert_array_equal(np.asarray(samples)[kept], np.asarray(given)[kept])
  assert np.any(np.asarray(samples)[~kept] != np.asarray(given)[~kept])


def test_invalid_requests_are_refused():
  model = Histogram(event_shape=(2,), num_levels=3)
  variables, binary_variables = helpers.random_variables(model), helpers.random_variables(BINARY)
  rng = jax.random.PRNGKey(0)
  with pytest.raises(ConfigError, match='temperature'):
    sampling.sample(model, variables, rng, 4, temperature=0.0)
  with pytest.raises(ConfigError, match='temperature must be a finite number > 0, got inf'):
    sampling.sample(model, variables, rng, 4, temperature=float('inf'))
  with pytest.raises(ConfigError, match='temperature must be a finite number'):
    sampling.sample(BINARY, binary_variables, rng, 4, temperature=float('inf'))
  with pytest.raises(ConfigError, match='number of samples'):
    sampling.sample(BINARY, binary_variables, rng, 0)
  with pytest.raises(ValueError, match='given'):
    sampling.sample(model, variables, rng, 4, given=jnp.zeros((4, 2), jnp.int32))
  with pytest.raises(ValueError, match='given_mask'):
    sampling.sample(BINARY, binary_variables, rng, 4, given=jnp.zeros((4, 2, 2, 1), jnp.int32))


class _RunningSum(nn.Module):
  """A test model with a cache: logit of dim d = a_d + b * sum of the dims of earlier steps.

  Naive outputs use an exclusive cumulative sum over the whole x; `decode` keeps the
  sum in its 'cache' collection and adds the dims the previous step drew, so the two
  paths compute the same logits in different ways, as real cached models do.
  """
  event_shape: tuple[int, ...] = (6,)
  num_levels: int = 2
  num_classes: int | None = None
  dims_per_step: int = 1

  def ordering(self):
    return np.arange(6)

  @nn.compact
  def __call__(self, x, y=None):
    a = self.param('a', nn.initializers.normal(1.0), self.event_shape)
    b = self.param('b', nn.initializers.constant(1.5), ())
    k = self.dims_per_step
    per_step = x.reshape(x.shape[0], -1, k).sum(axis=2)
    before = jnp.repeat(jnp.cumsum(per_step, axis=1) - per_step, k, axis=1)
    return a + b * before.astype(jnp.float32)

  @nn.compact
  def decode(self, x, t, y=None):
    a = self.param('a', nn.initializers.normal(1.0), self.event_shape)
    b = self.param('b', nn.initializers.constant(1.5), ())
    total = self.variable('cache', 'sum', jnp.zeros, (x.shape[0],), jnp.float32)
    k = self.dims_per_step
    previous = jax.lax.dynamic_slice_in_dim(x, jnp.maximum(t - 1, 0) * k, k, axis=1)
    total.value = total.value + jnp.where(t > 0, previous.sum(axis=1), 0).astype(jnp.float32)
    dims = jax.lax.dynamic_slice_in_dim(jnp.arange(6), t * k, k)
    return a[dims][None] + b * total.value[:, None]


@pytest.mark.parametrize('dims_per_step', [1, 2])
def test_cached_sampler_returns_the_naive_samples(dims_per_step):
  model = _RunningSum(dims_per_step=dims_per_step)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 6), jnp.int32))
  rng = jax.random.PRNGKey(5)
  naive = sampling.sample(model, variables, rng, 256, method='naive')
  cached = sampling.sample(model, variables, rng, 256, method='cached')
  np.testing.assert_array_equal(naive, cached)
  assert 0 < np.asarray(naive).mean() < 1  # Neither all zeros nor all ones.
  given = jnp.asarray(np.random.default_rng(0).integers(0, 2, (256, 6)), jnp.int32)
  given_mask = jnp.array([True, False, False, True, False, False])
  completed = sampling.sample(model, variables, rng, 256, given=given, given_mask=given_mask,
                              method='cached')
  np.testing.assert_array_equal(completed, sampling.sample(
      model, variables, rng, 256, given=given, given_mask=given_mask, method='naive'))
  np.testing.assert_array_equal(np.asarray(completed)[:, [0, 3]], np.asarray(given)[:, [0, 3]])


def test_cached_sampling_needs_a_decode_step():
  with pytest.raises(ValueError, match='decode'):
    sampling.sample(BINARY, helpers.random_variables(BINARY), jax.random.PRNGKey(0), 2,
                    method='cached')
