"""WaveNet: receptive field by Jacobian, normalisation, cached == naive sampling, learning, CLI."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dulx.errors import ConfigError
from dulx.models import build_model
from dulx.models.autoregressive.wavenet import WaveNet
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(num_stacks=1, layers_per_stack=2, residual_channels=8, skip_channels=8)


def _model(event_shape, num_levels, **fields):
  likelihood = 'bernoulli' if num_levels == 2 else 'categorical'
  return WaveNet(event_shape=event_shape, num_levels=num_levels,
                 **{**TINY, 'likelihood': likelihood, **fields})


def _codes_network(model, variables, y, seed=0):
  """u [B, *S] float -> logits, through codes one_hot(x0) + u * v (v a fixed [L] vector)."""
  rng = np.random.default_rng(seed)
  base = jax.nn.one_hot(rng.integers(0, model.num_levels, model.event_shape), model.num_levels)
  direction = jnp.asarray(rng.standard_normal(model.num_levels), jnp.float32)
  return lambda u: model.apply(variables, base + u[..., None] * direction, y, method='network')


@pytest.mark.parametrize('fields,receptive_field', [
    (dict(num_stacks=1, layers_per_stack=3, kernel_size=2, first_kernel_size=2), 2 + 1 + 2 + 4),
    (dict(num_stacks=2, layers_per_stack=2, kernel_size=3, first_kernel_size=1), 1 + 2 * (2 + 4)),
    (dict(num_stacks=1, layers_per_stack=4, kernel_size=2, first_kernel_size=3,
          positions=False), 3 + 1 + 2 + 4 + 8),
])
def test_each_output_sees_exactly_its_receptive_field(fields, receptive_field):
  length = 24
  model = _model((length,), 3, **fields)
  assert model.receptive_field == receptive_field
  variables = helpers.random_variables(model, scale=0.5)
  u = jax.random.normal(jax.random.PRNGKey(1), (8, length))
  dependency = helpers.dependency_matrix(_codes_network(model, variables, None), u)
  helpers.assert_autoregressive(dependency, model.ordering())
  # Every dilation shows: output t sees x_{t-R} ... x_{t-1}, each of them, and no more.
  lags = np.arange(length)[:, None] - np.arange(length)[None, :]
  np.testing.assert_array_equal(dependency, (lags >= 1) & (lags <= receptive_field))


@pytest.mark.parametrize('event_shape,num_levels,num_classes', [
    ((4, 4, 1), 2, None), ((3, 3, 3), 4, 3)])
def test_images_are_causal_in_raster_order(event_shape, num_levels, num_classes):
  model = _model(event_shape, num_levels, num_classes=num_classes, layers_per_stack=5)
  assert model.receptive_field >= np.prod(event_shape)
  variables = helpers.random_variables(model, scale=0.5)
  y = None if num_classes is None else jnp.array([2])
  u = jax.random.normal(jax.random.PRNGKey(2), (8, *event_shape))
  dependency = helpers.dependency_matrix(_codes_network(model, variables, y), u)
  helpers.assert_autoregressive(dependency, model.ordering(), dense=True)


NORMALISATION_CASES = {
    'binary-2x2': dict(event_shape=(2, 2, 1), num_levels=2),
    'binary-3x3': dict(event_shape=(3, 3, 1), num_levels=2),
    'binary-2x2-conditional': dict(event_shape=(2, 2, 1), num_levels=2, num_classes=3),
    'ternary-2x2-categorical': dict(event_shape=(2, 2, 1), num_levels=3),
    'binary-sequence-4': dict(event_shape=(4,), num_levels=2),
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


@pytest.mark.parametrize('event_shape,num_levels,num_classes', [
    ((12,), 5, None), ((4, 4, 1), 2, None), ((3, 3, 3), 4, 2)])
def test_cached_sampling_returns_the_naive_samples(event_shape, num_levels, num_classes):
  model = _model(event_shape, num_levels, num_classes=num_classes, layers_per_stack=3,
                 kernel_size=3)
  variables = helpers.random_variables(model, scale=0.5)
  given_mask = np.random.default_rng(2).random(event_shape) < 0.4
  helpers.assert_cached_sampling_equals_naive(model, variables, given_mask, all_levels=True)


def test_loss_falls_and_samples_are_valid_levels():
  helpers.assert_learns_stripes(_model((4, 4, 1), 2, layers_per_stack=4))


def test_bfloat16_compute_keeps_float32_params_and_log_prob():
  helpers.assert_bfloat16_matches_float32(_model((4, 4, 3), 4, dtype=jnp.bfloat16))


def test_dropout_only_in_training():
  x = jnp.asarray(np.random.default_rng(0).integers(0, 3, (4, 6)), jnp.int32)
  helpers.assert_dropout_only_in_training(_model((6,), 3, dropout=0.5), x)


def test_experiment_script_runs_on_digits(tmp_path):
  flags = ['--dataset=digits', '--train_split=train[:256]', '--eval_split=train[256:320]',
           '--num_stacks=1', '--layers_per_stack=2', '--residual_channels=8', '--skip_channels=8',
           '--batch_size=16', '--num_steps=2', '--eval_every=0', '--checkpoint_every=0',
           '--num_samples=2', f'--workdir={tmp_path / "run"}']
  result = subprocess.run([sys.executable, os.path.join(REPO, 'experiments', 'wavenet.py'), *flags],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out['step'] == 2 and np.isfinite(out['bits_per_dim'])


def test_build_resolves_likelihood_and_options():
  binary = build_model('wavenet', helpers.dataset_info((8, 8, 1), 2, 10),
                       {'conditional': True, 'num_stacks': 3, 'layers_per_stack': 4})
  assert isinstance(binary, WaveNet)
  assert (binary.likelihood, binary.num_classes, binary.event_shape) == ('bernoulli', 10, (8, 8, 1))
  assert binary.dilations == (1, 2, 4, 8) * 3
  text = build_model('wavenet', helpers.dataset_info((64,), 61), {'positions': False},
                     dtype=jnp.bfloat16)
  assert (text.likelihood, text.num_levels, text.positions, text.dtype) == (
      'categorical', 61, False, jnp.bfloat16)


@pytest.mark.parametrize('options,match', [
    ({'num_stacks': 0}, 'num_stacks'),
    ({'layers_per_stack': -1}, 'layers_per_stack'),
    ({'kernel_size': 1}, 'kernel_size'),
    ({'first_kernel_size': 0}, 'first_kernel_size'),
    ({'residual_channels': 2.5}, 'residual_channels'),
    ({'skip_channels': True}, 'skip_channels'),
    ({'positions': 'yes'}, 'positions'),
    ({'likelihood': 'bernoulli'}, 'binary'),
    ({'likelihood': 'logistic'}, 'likelihood'),
    ({'conditional': True}, 'labels'),
    ({'dropout': -0.1}, 'dropout'),
    ({'dilation': 2}, 'unknown option'),
])
def test_build_refuses(options, match):
  with pytest.raises(ConfigError, match=match) as error:
    build_model('wavenet', helpers.dataset_info((4, 4, 3), 4), options)
  assert '\n' not in str(error.value)


def test_build_refuses_continuous_data():
  with pytest.raises(ConfigError, match='--quantize'):
    build_model('wavenet', helpers.dataset_info((2,), None), {})
