"""RNN: causality by Jacobian, normalisation, cached == naive sampling, learning, CLI, builder."""

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
from dulx.models.autoregressive.rnn import RNN
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _model(event_shape, num_levels, **fields):
  likelihood = 'bernoulli' if num_levels == 2 else 'categorical'
  return RNN(event_shape=event_shape, num_levels=num_levels,
             **{'hidden_size': 8, 'likelihood': likelihood, **fields})


def _codes_network(model, variables, y, seed=0):
  """u [B, *S] float -> logits, through codes one_hot(x0) + u * v (v a fixed [L] vector)."""
  rng = np.random.default_rng(seed)
  base = jax.nn.one_hot(rng.integers(0, model.num_levels, model.event_shape), model.num_levels)
  direction = jnp.asarray(rng.standard_normal(model.num_levels), jnp.float32)
  return lambda u: model.apply(variables, base + u[..., None] * direction, y, method='network')


@pytest.mark.parametrize('event_shape,num_levels,fields', [
    ((10,), 4, dict(cell='lstm', num_layers=2)),
    ((3, 3, 3), 2, dict(cell='gru', num_classes=3)),
    ((4, 4, 1), 3, dict(cell='lstm', positions=False)),
])
def test_each_output_sees_every_earlier_input_and_no_other(event_shape, num_levels, fields):
  model = _model(event_shape, num_levels, **fields)
  # Every parameter random (start input, class embedding and positions included).
  variables = helpers.random_variables(model, scale=0.5)
  y = None if model.num_classes is None else jnp.array([2])
  u = jax.random.normal(jax.random.PRNGKey(1), (4, *event_shape))
  dependency = helpers.dependency_matrix(_codes_network(model, variables, y), u)
  np.testing.assert_array_equal(model.ordering(), np.arange(np.prod(event_shape)))
  helpers.assert_autoregressive(dependency, model.ordering(), dense=True)


def test_positions_and_class_enter_every_step():
  model = _model((2, 3, 3), 2, num_classes=2)
  variables = helpers.random_variables(model, scale=0.5)
  # Row, column and channel of the next sub-pixel: 3 coordinates.
  assert variables['params']['position_proj']['kernel'].shape == (3, model.hidden_size)
  x = jnp.zeros((2, 2, 3, 3), jnp.int32)
  logits = model.apply(variables, x, jnp.array([0, 1]))
  assert not np.any(np.isclose(logits[0], logits[1]))  # The class changes every output.
  without = jax.tree.map(lambda p: p, variables)
  without['params']['position_proj']['kernel'] = jnp.zeros((3, model.hidden_size))
  changed = ~np.isclose(logits, model.apply(without, x, jnp.array([0, 1])))
  assert changed.reshape(2, -1).all(axis=1).all()  # So do the positions, from step 0 on.
  assert 'position_proj' not in helpers.random_variables(model.clone(positions=False))['params']
  with pytest.raises(ValueError, match='class-conditional'):
    model.apply(variables, x)


NORMALISATION_CASES = {
    'binary-2x2': dict(event_shape=(2, 2, 1), num_levels=2),
    'binary-3x3-gru': dict(event_shape=(3, 3, 1), num_levels=2, cell='gru'),
    'binary-2x2-conditional': dict(event_shape=(2, 2, 1), num_levels=2, num_classes=3),
    'ternary-2x2-categorical': dict(event_shape=(2, 2, 1), num_levels=3, num_layers=2),
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


@pytest.mark.parametrize('event_shape,num_levels,fields', [
    ((12,), 5, dict(cell='lstm', num_layers=2)),
    ((4, 4, 1), 2, dict(cell='gru')),
    ((3, 3, 3), 4, dict(cell='lstm', num_classes=2)),
])
def test_cached_sampling_returns_the_naive_samples(event_shape, num_levels, fields):
  model = _model(event_shape, num_levels, **fields)
  variables = helpers.random_variables(model, scale=0.5)
  given_mask = np.random.default_rng(2).random(event_shape) < 0.4
  helpers.assert_cached_sampling_equals_naive(model, variables, given_mask, all_levels=True)


def test_loss_falls_and_samples_are_valid_levels():
  helpers.assert_learns_stripes(_model((4, 4, 1), 2, hidden_size=16), learning_rate=2e-2)


def test_bfloat16_compute_keeps_float32_params_and_log_prob():
  helpers.assert_bfloat16_matches_float32(_model((4, 4, 3), 4, dtype=jnp.bfloat16))


def test_dropout_only_in_training():
  x = jnp.asarray(np.random.default_rng(0).integers(0, 3, (4, 6)), jnp.int32)
  helpers.assert_dropout_only_in_training(_model((6,), 3, dropout=0.5), x)


def _run_script(tmp_path, name, *flags):
  workdir = tmp_path / name
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'experiments', 'rnn.py'), *flags, '--hidden_size=8',
       '--batch_size=16', '--num_steps=2', '--eval_every=0', '--checkpoint_every=0',
       '--num_samples=2', f'--workdir={workdir}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out['step'] == 2 and np.isfinite(out['bits_per_dim'])
  return workdir


def test_experiment_script_runs_on_digits(tmp_path):
  _run_script(tmp_path, 'digits', '--dataset=digits', '--train_split=train[:256]',
              '--eval_split=train[256:320]', '--cell=gru')


def test_experiment_script_runs_on_text_and_writes_text_samples(tmp_path):
  workdir = _run_script(tmp_path, 'text', '--dataset=text:alice:16', '--train_split=train[:64]',
                        '--eval_split=test[:16]')
  lines = (workdir / 'samples' / 'step_00000002.txt').read_text().splitlines()
  assert len(lines) == 2 and all(len(line) == 16 for line in lines)


def test_build_resolves_likelihood_and_options():
  binary = build_model('rnn', helpers.dataset_info((8, 8, 1), 2, 10),
                       {'conditional': True, 'cell': 'gru', 'num_layers': 2})
  assert isinstance(binary, RNN)
  assert (binary.likelihood, binary.num_classes, binary.cell, binary.num_layers) == (
      'bernoulli', 10, 'gru', 2)
  assert binary.positions and binary.event_shape == (8, 8, 1)
  text = build_model('rnn', helpers.dataset_info((64,), 61), {'hidden_size': 32},
                     dtype=jnp.bfloat16)
  assert (text.likelihood, text.num_levels, text.hidden_size, text.dtype) == (
      'categorical', 61, 32, jnp.bfloat16)


@pytest.mark.parametrize('options,match', [
    ({'cell': 'rnn'}, 'cell'),
    ({'num_layers': 0}, 'num_layers'),
    ({'hidden_size': -8}, 'hidden_size'),
    ({'hidden_size': 8.0}, 'hidden_size'),
    ({'positions': 1}, 'positions'),
    ({'likelihood': 'bernoulli'}, 'binary'),
    ({'likelihood': 'gaussian'}, 'likelihood'),
    ({'conditional': True}, 'labels'),
    ({'dropout': 1.0}, 'dropout'),
    ({'dropout': 'half'}, 'dropout'),
    ({'num_heads': 2}, 'unknown option'),
])
def test_build_refuses(options, match):
  with pytest.raises(ConfigError, match=match) as error:
    build_model('rnn', helpers.dataset_info((4, 4, 3), 4), options)
  assert '\n' not in str(error.value)


def test_build_refuses_continuous_data():
  with pytest.raises(ConfigError, match='--quantize'):
    build_model('rnn', helpers.dataset_info((2,), None), {})
