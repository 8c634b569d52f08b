"""ImageGPT: causality by Jacobian, normalisation, KV-cache sampling, learning, builder errors."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dulx import sampling
from dulx.errors import ConfigError
from dulx.models import build_model
from dulx.models.autoregressive.imagegpt import ImageGPT
from tests import helpers

TINY = dict(num_layers=1, embed_dim=16, num_heads=2, mlp_ratio=2)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _model(event_shape, num_levels, **fields):
  likelihood = 'bernoulli' if num_levels == 2 else 'categorical'
  return ImageGPT(event_shape=event_shape, num_levels=num_levels,
                  **{**TINY, 'likelihood': likelihood, **fields})


@pytest.mark.parametrize('event_shape,num_levels,num_classes,num_layers', [
    ((4, 4, 1), 2, None, 2), ((2, 3, 3), 4, None, 1), ((3, 3, 1), 3, 3, 1)])
def test_each_output_sees_exactly_the_earlier_inputs(event_shape, num_levels, num_classes,
                                                     num_layers):
  model = _model(event_shape, num_levels, num_classes=num_classes, num_layers=num_layers)
  variables = helpers.random_variables(model, scale=0.5)
  # Fractional levels: the embedding interpolates between rows, so the Jacobian
  # w.r.t. u is the embedding's difference there (no kink at an integer).
  u = jax.random.uniform(jax.random.PRNGKey(1), (4, *event_shape), maxval=num_levels - 1)
  y = None if num_classes is None else jnp.array([1])
  network = lambda u: model.apply(variables, u, y, method='network')
  dependency = helpers.dependency_matrix(network, u)
  # Attention reaches every earlier position: the dependence is dense and strictly
  # lower-triangular in raster-then-channel order.
  helpers.assert_autoregressive(dependency, model.ordering(), dense=True)
  np.testing.assert_array_equal(model.ordering(), np.arange(np.prod(event_shape)))


def test_integer_levels_embed_as_a_lookup():
  model = _model((2, 2, 1), 5)
  variables = helpers.random_variables(model)
  x = jnp.array([[[[0], [4]], [[2], [3]]]], jnp.int32)
  table = variables['params']['token_embedding']
  embedded = model.apply(variables, x.reshape(1, 4).astype(jnp.float32), method='_embed')
  np.testing.assert_allclose(embedded[0], table[x.reshape(4)], rtol=1e-6)


NORMALISATION_CASES = {
    'binary-2x2': dict(event_shape=(2, 2, 1), num_levels=2),
    'binary-3x3': dict(event_shape=(3, 3, 1), num_levels=2),
    'binary-2x2-conditional': dict(event_shape=(2, 2, 1), num_levels=2, num_classes=3),
    'ternary-2x2-categorical': dict(event_shape=(2, 2, 1), num_levels=3),
    'binary-rgb-1x2': dict(event_shape=(1, 2, 3), num_levels=2),
}


@pytest.mark.parametrize('case', NORMALISATION_CASES)
def test_log_prob_sums_to_one(case):
  model = _model(**NORMALISATION_CASES[case])
  variables = helpers.random_variables(model, scale=0.5)
  log_prob = jax.jit(lambda x, y: model.apply(variables, x, y, method='log_prob'))
  for c in range(model.num_classes) if model.num_classes else [None]:
    helpers.assert_normalised(
        lambda x, c=c: log_prob(x, None if c is None else jnp.full([x.shape[0]], c)),
        model.event_shape, model.num_levels)


@pytest.mark.parametrize('num_levels,num_classes', [(2, None), (4, 3)])
def test_cached_samples_equal_naive_samples(num_levels, num_classes):
  # Two blocks: the second block's cached keys come from the first block's outputs.
  model = _model((4, 4, 1), num_levels, num_classes=num_classes, num_layers=2)
  variables = helpers.random_variables(model, seed=1, scale=0.5)
  given_mask = (np.arange(4) < 2)[:, None, None]  # The top half given.
  helpers.assert_cached_sampling_equals_naive(model, variables, given_mask, num=32, seed=3)


def test_dropout_only_when_training():
  model = _model((3, 3, 1), 2, dropout_rate=0.5)
  variables = helpers.random_variables(model)
  x = jnp.ones((2, 3, 3, 1), jnp.int32)
  apply = jax.jit(lambda key, train: model.apply(variables, x, train=train, rngs={'dropout': key}),
                  static_argnums=1)
  np.testing.assert_array_equal(apply(jax.random.PRNGKey(0), False), apply(jax.random.PRNGKey(1), False))
  assert not np.allclose(apply(jax.random.PRNGKey(0), True), apply(jax.random.PRNGKey(1), True))


def test_loss_falls_and_samples_are_valid_levels():
  helpers.assert_learns_stripes(_model((4, 4, 1), 2), ratio=0.6, num_samples=8)


def test_bfloat16_compute_keeps_float32_params_and_log_prob():
  helpers.assert_bfloat16_matches_float32(_model((4, 4, 3), 4, dtype=jnp.bfloat16))


def test_remat_attention_gives_the_same_loss_and_gradients_and_keeps_no_weights():
  x = jnp.asarray(np.random.default_rng(3).integers(0, 4, (6, 4, 4, 3)), jnp.int32)
  helpers.assert_remat_attention_keeps_less_and_computes_the_same(
      _model((4, 4, 3), 4, num_classes=3, dropout_rate=0.2, num_layers=2), x, jnp.arange(6) % 3, length=48)  # 48 sub-pixels.


def test_build_resolves_likelihood_and_options():
  binary = build_model('imagegpt', helpers.dataset_info((8, 8, 1), 2, 10),
                       {'conditional': True, 'num_layers': 3, 'embed_dim': 24, 'num_heads': 3,
                        'dropout': 0.1, 'remat_attention': True})
  assert isinstance(binary, ImageGPT)
  assert (binary.likelihood, binary.num_classes, binary.num_layers) == ('bernoulli', 10, 3)
  assert (binary.embed_dim, binary.num_heads, binary.dropout_rate) == (24, 3, 0.1)
  assert binary.remat_attention
  rgb = build_model('imagegpt', helpers.dataset_info((8, 8, 3), 256), {}, dtype=jnp.bfloat16)
  assert (rgb.likelihood, rgb.num_levels, rgb.num_classes, rgb.dtype) == (
      'categorical', 256, None, jnp.bfloat16)
  assert not rgb.remat_attention
  assert sampling.autoregressive.supports_cache(rgb)


@pytest.mark.parametrize('options,match', [
    ({'num_layers': 0}, 'num_layers'),
    ({'embed_dim': 10, 'num_heads': 4}, 'multiple'),
    ({'num_heads': 0}, 'num_heads'),
    ({'mlp_ratio': 1.5}, 'mlp_ratio'),
    ({'dropout': 1.0}, 'dropout'),
    ({'dropout': -0.1}, 'dropout'),
    ({'dropout': True}, 'dropout'),
    ({'likelihood': 'bernoulli'}, 'binary'),
    ({'conditional': True}, 'labels'),
    ({'remat_attention': 'yes'}, 'remat_attention'),
    ({'quantize': 8}, 'unknown option'),
])
def test_build_refuses(options, match):
  with pytest.raises(ConfigError, match=match) as error:
    build_model('imagegpt', helpers.dataset_info((4, 4, 3), 4), options)
  assert '\n' not in str(error.value)


def test_build_refuses_continuous_data():
  with pytest.raises(ConfigError, match='--quantize'):
    build_model('imagegpt', helpers.dataset_info((4, 4, 1), None), {})


def test_script_trains_on_digits(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'experiments', 'imagegpt.py'),
       '--flagfile=experiments/configs/imagegpt_digits.flags', '--num_layers=1', '--embed_dim=16',
       '--num_heads=2', '--batch_size=16', '--train_split=train[:64]', '--eval_split=train[64:96]',
       '--num_steps=2', '--eval_every=0', '--checkpoint_every=0', '--num_samples=2',
       f'--workdir={tmp_path / "imagegpt"}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out['step'] == 2 and np.isfinite(out['bits_per_dim'])
