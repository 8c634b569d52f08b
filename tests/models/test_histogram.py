"""Histogram: normalisation, the closed-form MLE, learning, sampling shapes, builder errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dulx.errors import ConfigError
from dulx.models import build_model
from dulx.models.autoregressive import Histogram, fit_counts
from dulx.models.autoregressive import histogram
from tests import helpers


def _random_histogram(event_shape, num_levels, num_classes=None):
  model = Histogram(event_shape=event_shape, num_levels=num_levels, num_classes=num_classes)
  return model, helpers.random_variables(model, scale=2.0)


@pytest.mark.parametrize('event_shape,num_levels', [((1,), 7), ((2,), 5), ((2, 2, 1), 2)])
def test_log_prob_sums_to_one(event_shape, num_levels):
  model, variables = _random_histogram(event_shape, num_levels)
  helpers.assert_normalised(lambda x: model.apply(variables, x, method='log_prob'),
                            event_shape, num_levels)


def test_conditional_log_prob_sums_to_one_per_class():
  model, variables = _random_histogram((2,), 4, num_classes=3)
  for c in range(3):
    helpers.assert_normalised(
        lambda x, c=c: model.apply(variables, x, jnp.full([x.shape[0]], c), method='log_prob'),
        (2,), 4)


def test_probs_is_the_table_of_log_prob():
  model, variables = _random_histogram((2,), 3)
  points = helpers.all_points((2,), 3)
  table = model.apply(variables, method='probs')
  chex.assert_shape(table, (3, 3))
  np.testing.assert_allclose(table[points[:, 0], points[:, 1]],
                             np.exp(model.apply(variables, points)), rtol=1e-6)


def test_fit_counts_normalises_counts():
  x = np.array([[0, 1], [0, 1], [2, 0], [1, 1]], np.int32)
  expected = np.zeros((3, 3), np.float32)
  expected[0, 1], expected[2, 0], expected[1, 1] = 0.5, 0.25, 0.25
  np.testing.assert_array_equal(fit_counts(jnp.asarray(x), 3, (2,)), expected)


def _fit(x, num_levels, num_steps):
  """The histogram of x after num_steps of Adam on the NLL; returns (probs, losses)."""
  model = Histogram(event_shape=x.shape[1:], num_levels=num_levels)
  params = model.init(jax.random.PRNGKey(0), x)['params']
  loss = lambda p, _: -model.apply({'params': p}, x).mean()
  params, losses = helpers.fit_adam(loss, params, jax.random.PRNGKey(0), num_steps=num_steps,
                                    learning_rate=0.1)
  return model.apply({'params': params}, method='probs'), losses


def test_maximum_likelihood_training_approaches_counts():
  num_levels = 5
  x = np.random.default_rng(1).choice(25, size=2000, p=np.arange(1, 26) / 325)
  x = jnp.asarray(np.stack([x // num_levels, x % num_levels], axis=-1), jnp.int32)
  mle = fit_counts(x, num_levels, (2,))
  assert np.all(mle > 0)
  probs, _ = _fit(x, num_levels, num_steps=400)
  np.testing.assert_allclose(probs, mle, atol=1e-3)


def test_loss_falls():
  x = jnp.array([[0], [0], [0], [1], [1], [5]] * 4, jnp.int32)
  _, losses = _fit(x, 8, num_steps=30)
  assert losses[0] == pytest.approx(np.log(8), rel=1e-6)
  assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize('num_classes', [None, 2])
def test_sample_shape_and_range(num_classes):
  model, variables = _random_histogram((2,), 6, num_classes=num_classes)
  y = jnp.arange(10) % 2 if num_classes else None
  x = model.apply(variables, jax.random.PRNGKey(0), 10, y, 0.7, method='sample')
  chex.assert_shape(x, (10, 2))
  assert x.dtype == jnp.int32 and x.min() >= 0 and x.max() < 6


def test_build():
  info = helpers.dataset_info((2,), 4, num_classes=3)
  model = build_model('histogram', info, {'conditional': True})
  assert (model.event_shape, model.num_levels, model.num_classes) == ((2,), 4, 3)
  assert build_model('histogram', info, {}).num_classes is None


@pytest.mark.parametrize('info,options,match', [
    (helpers.dataset_info((2,), None), {}, '--quantize'),
    (helpers.dataset_info((3,), 128), {}, '2\\*\\*20'),
    (helpers.dataset_info((8, 8, 1), 2), {}, '2\\*\\*20'),
    (helpers.dataset_info((2,), 4), {'conditional': True}, 'labels'),
    (helpers.dataset_info((2,), 4, 3), {'conditional': 'yes'}, 'true or false'),
    (helpers.dataset_info((2,), 4), {'hidden_sizes': (8,)}, 'unknown option'),
])
def test_build_refuses(info, options, match):
  with pytest.raises(ConfigError, match=match) as error:
    build_model('histogram', info, options)
  assert '\n' not in str(error.value)


def test_largest_support_is_accepted():
  assert histogram.MAX_SUPPORT == 2**20
  build_model('histogram', helpers.dataset_info((2,), 1024), {})
