"""MADE: mask causality by Jacobian, normalisation, mask ensembles, learning, builder errors."""

import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dulx import distributions
from dulx import models
from dulx.errors import ConfigError
from dulx.models import build_model
from dulx.models.autoregressive import MADE
from dulx.nn import MaskedDense
from tests import helpers


def _check_causal(model, mask_indices, dense=True):
  """Jacobian causality of each listed mask of `model` (compiled once for all of them)."""
  variables = helpers.random_variables(model, scale=0.5)
  u = jnp.asarray(np.random.default_rng(7).standard_normal((32, *model.event_shape)), jnp.float32)
  y = None if model.num_classes is None else jnp.ones([1], jnp.int32)
  network = lambda v, i: model.apply(variables, v, y, mask_index=i, method='network')
  for i in mask_indices:
    helpers.assert_autoregressive(helpers.dependency_matrix(network, u, i), model.ordering(i),
                                  dense=dense)


def test_masked_dense_is_dense_of_masked_kernel():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((3, 5)), jnp.float32)
  mask = jnp.asarray(rng.uniform(size=(5, 4)) < 0.5, jnp.float32)
  layer = MaskedDense(4)
  variables = layer.init(jax.random.PRNGKey(2), x, mask)
  kernel, bias = variables['params']['kernel'], variables['params']['bias']
  np.testing.assert_allclose(layer.apply(variables, x, mask), x @ (kernel * mask) + bias, rtol=1e-6)
  grads = jax.grad(lambda v: layer.apply(v, x, mask).sum())(variables)
  assert np.all(np.asarray(grads['params']['kernel'])[np.asarray(mask) == 0] == 0)


@pytest.mark.parametrize('likelihood,num_levels', [('bernoulli', 2), ('categorical', 3)])
def test_causal_for_every_ordering_of_three_dims(likelihood, num_levels):
  model = MADE(event_shape=(3,), num_levels=num_levels, hidden_sizes=(16, 16), num_masks=32,
               order_agnostic=True, likelihood=likelihood)
  first_mask = {}
  for i in range(model.num_masks):
    first_mask.setdefault(tuple(model.ordering(i)), i)
  assert set(first_mask) == set(itertools.permutations(range(3)))
  _check_causal(model, sorted(first_mask.values()))


def test_causal_for_an_explicit_ordering():
  model = MADE(event_shape=(2, 2), num_levels=2, hidden_sizes=(16, 16), order=(2, 0, 3, 1),
               likelihood='bernoulli', num_masks=2)
  for i in range(2):
    np.testing.assert_array_equal(model.ordering(i), [2, 0, 3, 1])
  _check_causal(model, range(2))


@pytest.mark.parametrize('likelihood,num_levels,num_classes', [
    ('bernoulli', 2, None), ('categorical', 4, 3)])
def test_causal_for_each_mask_of_an_order_agnostic_ensemble(likelihood, num_levels, num_classes):
  model = MADE(event_shape=(2, 3), num_levels=num_levels, num_classes=num_classes,
               hidden_sizes=(64, 64), num_masks=4, order_agnostic=True, mask_seed=3,
               likelihood=likelihood)
  assert len({tuple(model.ordering(i)) for i in range(4)}) == 4
  _check_causal(model, range(4))


def test_random_ordering_is_shared_by_all_masks():
  model = MADE(event_shape=(6,), num_levels=2, hidden_sizes=(32,), num_masks=3, order='random',
               mask_seed=5, likelihood='bernoulli')
  assert sorted(model.ordering()) == list(range(6))
  assert not np.array_equal(model.ordering(), np.arange(6))
  for i in range(3):
    np.testing.assert_array_equal(model.ordering(i), model.ordering())
  _check_causal(model, range(3), dense=False)


def test_masks_differ_between_connectivities_and_are_binary():
  model = MADE(event_shape=(4, 4), num_levels=3, hidden_sizes=(20, 10), num_masks=2,
               dtype=jnp.bfloat16)
  masks0, masks1 = model.masks(0), model.masks(1)
  assert [m.shape for m in masks0] == [(16, 20), (20, 10), (10, 48)]
  assert all(m.dtype == jnp.bfloat16 and set(np.unique(np.asarray(m, np.float32))) <= {0.0, 1.0}
             for m in masks0)
  assert any(not np.array_equal(a, b) for a, b in zip(masks0, masks1))


def test_conditional_outputs_depend_on_the_label():
  model = MADE(event_shape=(4,), num_levels=2, num_classes=2, hidden_sizes=(8,),
               likelihood='bernoulli')
  variables = helpers.random_variables(model, scale=0.5)
  x = jnp.zeros((2, 4), jnp.int32)
  logits = model.apply(variables, x, jnp.array([0, 1]))
  assert not np.allclose(logits[0], logits[1])


NORMALISATION_CASES = {
    'binary-2x2': dict(event_shape=(2, 2, 1), num_levels=2, likelihood='bernoulli'),
    'binary-3x3': dict(event_shape=(3, 3, 1), num_levels=2, likelihood='bernoulli'),
    'binary-3x3-ensemble': dict(event_shape=(3, 3, 1), num_levels=2, likelihood='bernoulli',
                                num_masks=3, order_agnostic=True),
    'ternary-2x2-ensemble': dict(event_shape=(2, 2), num_levels=3, num_masks=2),
    'binary-2x2-conditional': dict(event_shape=(2, 2, 1), num_levels=2, likelihood='bernoulli',
                                   num_classes=3, num_masks=2),
}


@pytest.mark.parametrize('case', NORMALISATION_CASES)
def test_log_prob_sums_to_one(case):
  model = MADE(hidden_sizes=(12, 12), **NORMALISATION_CASES[case])
  classes = range(model.num_classes) if model.num_classes else [None]
  variables = helpers.random_variables(model, scale=0.5)
  for c in classes:
    def log_prob(x, c=c):
      y = None if c is None else jnp.full([x.shape[0]], c)
      return model.apply(variables, x, y, method='log_prob')
    helpers.assert_normalised(log_prob, model.event_shape, model.num_levels)


def test_ensemble_averages_mask_probabilities_and_training_picks_one_mask():
  model = MADE(event_shape=(5,), num_levels=2, hidden_sizes=(16,), num_masks=3,
               likelihood='bernoulli')
  variables = helpers.random_variables(model, scale=0.5)
  x = jnp.asarray(np.random.default_rng(3).integers(0, 2, (6, 5)), jnp.int32)
  per_mask = np.stack([
      distributions.log_prob(model.apply(variables, x, mask_index=i), x).sum(-1) for i in range(3)])
  np.testing.assert_allclose(model.apply(variables, x, method='log_prob'),
                             jax.nn.logsumexp(per_mask, axis=0) - math.log(3), rtol=1e-5)
  train_log_prob = jax.jit(lambda rng: model.apply(variables, x, train=True, method='log_prob',
                                                   rngs={'mask': rng}))
  picked = set()
  for seed in range(12):
    value = np.asarray(train_log_prob(jax.random.PRNGKey(seed)))
    matches = [i for i in range(3) if np.allclose(value, per_mask[i], rtol=1e-5)]
    assert len(matches) == 1
    picked.add(matches[0])
  assert picked == {0, 1, 2}


def test_loss_falls():
  data_rng, rng = np.random.default_rng(0), jax.random.PRNGKey(0)
  prototypes = data_rng.integers(0, 4, (2, 9))
  y = np.arange(64) % 2
  x = np.where(data_rng.uniform(size=(64, 9)) < 0.1, 0, prototypes[y]).reshape(64, 3, 3)
  x, y = jnp.asarray(x, jnp.int32), jnp.asarray(y, jnp.int32)
  model = MADE(event_shape=(3, 3), num_levels=4, num_classes=2, hidden_sizes=(32,),
               num_masks=2, order_agnostic=True)
  params = helpers.random_variables(model)['params']

  def nll(params, rng, train):
    return -model.apply({'params': params}, x, y, train=train, method='log_prob',
                        rngs={'mask': rng}).mean()

  before = nll(params, rng, False)
  params, _ = helpers.fit_adam(lambda p, r: nll(p, r, True), params, rng, num_steps=40,
                               learning_rate=1e-2)
  assert nll(params, rng, False) < 0.9 * before


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model = MADE(event_shape=(2, 2, 1), num_levels=2, hidden_sizes=(8,), likelihood='bernoulli',
               dtype=jnp.bfloat16)
  variables = helpers.random_variables(model)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  x = jnp.asarray(helpers.all_points((2, 2, 1), 2))
  logits = model.apply(variables, x)
  assert logits.dtype == jnp.float32
  chex.assert_tree_all_finite(logits)
  reference = model.clone(dtype=jnp.float32).apply(variables, x)
  np.testing.assert_allclose(logits, reference, atol=0.05)


def test_build_resolves_likelihood_and_options():
  binary = build_model('made', helpers.dataset_info((4, 4, 1), 2, 10),
                       {'hidden_sizes': [8, 4], 'num_masks': 2, 'conditional': True,
                        'ordering': 'random', 'mask_seed': 1})
  assert (binary.likelihood, binary.hidden_sizes, binary.num_classes) == ('bernoulli', (8, 4), 10)
  assert binary.order == 'random' and binary.num_masks == 2
  assert build_model('made', helpers.dataset_info((4,), 17), {}).likelihood == 'categorical'
  binary_categorical = build_model('made', helpers.dataset_info((4,), 2),
                                   {'likelihood': 'categorical'})
  assert binary_categorical.likelihood == 'categorical'


@pytest.mark.parametrize('options,match', [
    ({'hidden_sizes': (8, 0)}, 'hidden_sizes'),
    ({'hidden_sizes': (-3,)}, 'hidden_sizes'),
    ({'hidden_sizes': '512'}, 'hidden_sizes'),
    ({'hidden_sizes': (2.5,)}, 'hidden_sizes'),
    ({'num_masks': 0}, 'num_masks'),
    ({'num_masks': True}, 'num_masks'),
    ({'ordering': 'reverse'}, 'ordering'),
    ({'order_agnostic': 1}, 'order_agnostic'),
    ({'mask_seed': -1}, 'mask_seed'),
    ({'likelihood': 'gaussian'}, 'likelihood'),
    ({'likelihood': 'bernoulli'}, 'binary'),
    ({'conditional': True}, 'labels'),
    ({'num_layers': 2}, 'unknown option'),
])
def test_build_refuses(options, match):
  with pytest.raises(ConfigError, match=match) as error:
    build_model('made', helpers.dataset_info((4, 4, 1), 4), options)
  assert '\n' not in str(error.value)


def test_build_refuses_continuous_data_and_unknown_models():
  with pytest.raises(ConfigError, match='--quantize'):
    build_model('made', helpers.dataset_info((2,), None), {})
  with pytest.raises(ConfigError, match="unknown model 'nade'; known models: .*made, maf") as e:
    build_model('nade', helpers.dataset_info((2,), 2), {})
  assert str(e.value).endswith(', '.join(models.names()) + '.')
