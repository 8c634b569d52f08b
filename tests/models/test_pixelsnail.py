"""PixelSNAIL: causality by Jacobian, normalisation, cached sampling, learning, builder errors."""

import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dulx.errors import ConfigError
from dulx.models import build_model
from dulx.models.autoregressive.pixelsnail import PixelSNAIL, position_encoding
from tests import helpers

TINY = dict(num_blocks=1, num_residual=1, channels=12, key_channels=4, value_channels=6,
            head_channels=12, first_kernel_size=3)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _model(event_shape, num_levels, **fields):
  likelihood = 'bernoulli' if num_levels == 2 else 'categorical'
  return PixelSNAIL(event_shape=event_shape, num_levels=num_levels,
                    **{**TINY, 'likelihood': likelihood, **fields})


@pytest.mark.parametrize('event_shape,num_levels,num_classes,fields', [
    ((4, 4, 1), 2, None, dict(num_blocks=2, num_heads=2)),
    ((3, 3, 3), 4, None, {}),
    ((4, 4, 1), 3, 3, dict(conv_impl='xla'))])
def test_each_output_sees_exactly_the_earlier_inputs(event_shape, num_levels, num_classes, fields):
  model = _model(event_shape, num_levels, num_classes=num_classes, **fields)
  # Every parameter random, masked taps included: the masks, not zeros in the
  # weights, must keep the network causal.
  variables = helpers.random_variables(model, scale=0.5)
  u = jax.random.uniform(jax.random.PRNGKey(1), (8, *event_shape))
  y = None if num_classes is None else jnp.array([2])
  network = lambda u: model.apply(variables, u, y, method='network')
  dependency = helpers.dependency_matrix(network, u)
  # The attention reaches every earlier pixel and the head every earlier channel of
  # the pixel itself (no blind spot): dense and strictly lower-triangular.
  helpers.assert_autoregressive(dependency, model.ordering(), dense=True)
  np.testing.assert_array_equal(model.ordering(), np.arange(np.prod(event_shape)))


def test_position_encoding():
  p = position_encoding(3, 5)
  chex.assert_shape(p, (3, 5, 2))
  np.testing.assert_allclose(p[:, 0, 0], [-0.5, 0.0, 0.5])
  np.testing.assert_allclose(p[0, :, 1], [-0.5, -0.25, 0.0, 0.25, 0.5])


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


@pytest.mark.parametrize('event_shape,num_levels,num_classes,fields', [
    ((4, 4, 1), 2, None, dict(num_residual=2)),
    ((3, 3, 3), 4, 2, dict(num_blocks=2, num_heads=2, kernel_size=5))])
def test_cached_samples_equal_naive_samples(event_shape, num_levels, num_classes, fields):
  model = _model(event_shape, num_levels, num_classes=num_classes, **fields)
  variables = helpers.random_variables(model, scale=0.5)
  given_mask = np.zeros(event_shape, bool)  # The first row and one sub-pixel given.
  given_mask[0], given_mask[1, 1, 0] = True, True
  helpers.assert_cached_sampling_equals_naive(model, variables, given_mask, num=16, seed=0)


def test_decode_equals_the_full_pass():
  model = _model((3, 4, 3), 3, num_classes=2, num_residual=2)
  # Scale 0.2 keeps the logits O(1), where float32 rounding is ~1e-7.
  variables = helpers.random_variables(model, scale=0.2)
  x = jnp.asarray(np.random.default_rng(1).integers(0, 3, (4, 3, 4, 3)), jnp.int32)
  y = jnp.array([0, 1, 1, 0])

  @jax.jit
  def decode_all(x):
    _, cache = model.apply(variables, x, 0, y, method='decode', mutable=['cache'])
    def step(cache, t):
      out, cache = model.apply({**variables, **cache}, x, t, y, method='decode', mutable=['cache'])
      return cache, out[:, 0]
    return jnp.moveaxis(jax.lax.scan(step, cache, jnp.arange(36))[1], 0, 1)

  full = model.apply(variables, x, y).reshape(4, 36, 3)
  assert np.abs(full).max() > 0.01
  np.testing.assert_allclose(decode_all(x), full, atol=1e-5, rtol=0)


def test_dropout_only_when_training():
  model = _model((3, 3, 1), 2, dropout_rate=0.5)
  variables = helpers.random_variables(model)
  x = jnp.ones((2, 3, 3, 1), jnp.int32)
  apply = jax.jit(lambda key, train: model.apply(variables, x, train=train, rngs={'dropout': key}),
                  static_argnums=1)
  np.testing.assert_array_equal(apply(jax.random.PRNGKey(0), False), apply(jax.random.PRNGKey(1), False))
  assert not np.allclose(apply(jax.random.PRNGKey(0), True), apply(jax.random.PRNGKey(1), True))


def test_loss_falls():
  helpers.assert_learns_stripes(_model((4, 4, 1), 2), ratio=0.6, num_samples=0)


def test_bfloat16_compute_keeps_float32_params_and_log_prob():
  helpers.assert_bfloat16_matches_float32(_model((4, 4, 3), 4, dtype=jnp.bfloat16))


def test_remat_attention_gives_the_same_loss_and_gradients_and_keeps_no_weights():
  x = jnp.asarray(np.random.default_rng(3).integers(0, 4, (6, 4, 4, 3)), jnp.int32)
  helpers.assert_remat_attention_keeps_less_and_computes_the_same(
      _model((4, 4, 3), 4, num_classes=3, dropout_rate=0.2), x, jnp.arange(6) % 3, length=16)  # 16 pixels.


def test_build_resolves_likelihood_and_options():
  binary = build_model('pixelsnail', helpers.dataset_info((8, 8, 1), 2, 10),
                       {'conditional': True, 'num_blocks': 3, 'num_heads': 2, 'key_channels': 8,
                        'value_channels': 16, 'dropout': 0.1, 'conv_impl': 'xla',
                        'remat_attention': True})
  assert isinstance(binary, PixelSNAIL)
  assert (binary.likelihood, binary.num_classes, binary.num_blocks) == ('bernoulli', 10, 3)
  assert (binary.num_heads, binary.key_channels, binary.value_channels) == (2, 8, 16)
  assert (binary.dropout_rate, binary.conv_impl, binary.remat_attention) == (0.1, 'xla', True)
  rgb = build_model('pixelsnail', helpers.dataset_info((8, 8, 3), 256), {}, dtype=jnp.bfloat16)
  assert (rgb.likelihood, rgb.num_levels, rgb.num_classes, rgb.dtype) == (
      'categorical', 256, None, jnp.bfloat16)


@pytest.mark.parametrize('options,match', [
    ({'num_blocks': 0}, 'num_blocks'),
    ({'num_residual': -1}, 'num_residual'),
    ({'channels': 0}, 'channels'),
    ({'key_channels': 6, 'num_heads': 4}, 'multiple'),
    ({'value_channels': 6, 'num_heads': 4, 'key_channels': 8}, 'multiple'),
    ({'kernel_size': 4}, 'odd'),
    ({'kernel_size': 1}, 'kernel_size'),
    ({'first_kernel_size': 2}, 'first_kernel_size'),
    ({'head_channels': 2}, 'head_channels'),
    ({'dropout': 1.5}, 'dropout'),
    ({'likelihood': 'bernoulli'}, 'binary'),
    ({'conv_impl': 'cudnn'}, 'conv_impl'),
    ({'remat_attention': 1}, 'remat_attention'),
    ({'conditional': True}, 'labels'),
    ({'stack_channels': 8}, 'unknown option'),
])
def test_build_refuses(options, match):
  with pytest.raises(ConfigError, match=match) as error:
    build_model('pixelsnail', helpers.dataset_info((4, 4, 3), 4), options)
  assert '\n' not in str(error.value)


@pytest.mark.parametrize('shape,num_levels,match', [
    ((16,), 2, 'images'), ((4, 4, 1), None, '--quantize')])
def test_build_refuses_data_it_cannot_model(shape, num_levels, match):
  with pytest.raises(ConfigError, match=match):
    build_model('pixelsnail', helpers.dataset_info(shape, num_levels), {})


def test_script_trains_on_digits(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'experiments', 'pixelsnail.py'),
       '--flagfile=experiments/configs/pixelsnail_digits.flags', '--num_blocks=1',
       '--num_residual=1', '--channels=8', '--key_channels=4', '--value_channels=4',
       '--head_channels=8', '--batch_size=16', '--train_split=train[:64]',
       '--eval_split=train[64:96]', '--num_steps=2', '--eval_every=0', '--checkpoint_every=0',
       '--num_samples=2', f'--workdir={tmp_path / "pixelsnail"}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out['step'] == 2 and np.isfinite(out['bits_per_dim'])
