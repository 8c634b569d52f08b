"""Gated PixelCNN: causality without blind spot, normalisation, cached sampling, learning, build."""

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
from dulx.models.autoregressive.gated_pixelcnn import GatedPixelCNN
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# 4 layers of 3x3 kernels: the vertical stack of the last layer spans 4 columns either
# side, so on 4x4 images every earlier pixel is in the receptive field. 18 features
# (6 per RGB group) keep dead head ReLUs from hiding a dependence at every test input.
TINY = dict(num_layers=4, channels=12, skip_channels=18, head_channels=18, first_kernel_size=3,
            kernel_size=3)


def _model(event_shape, num_levels, **fields):
  likelihood = 'bernoulli' if num_levels == 2 else 'categorical'
  return GatedPixelCNN(event_shape=event_shape, num_levels=num_levels,
                       **{**TINY, 'likelihood': likelihood, **fields})


@pytest.mark.parametrize('event_shape,num_levels,num_classes,impl', [
    ((4, 4, 1), 2, None, 'taps'), ((4, 4, 3), 4, None, 'xla'), ((4, 3, 1), 3, 3, 'taps')])
def test_each_output_sees_exactly_the_earlier_inputs(event_shape, num_levels, num_classes, impl):
  model = _model(event_shape, num_levels, num_classes=num_classes, conv_impl=impl)
  # Every parameter random, masked taps included: the masks and shifts, not zeros in
  # the weights, must keep the network causal.
  variables = helpers.random_variables(model, scale=0.5)
  u = jax.random.uniform(jax.random.PRNGKey(1), (8, *event_shape))
  y = None if num_classes is None else jnp.array([2])
  dependency = helpers.dependency_matrix(
      lambda u: model.apply(variables, u, y, method='network'), u)
  ordering = model.ordering()
  np.testing.assert_array_equal(ordering, np.arange(np.prod(event_shape)))
  # dense: every earlier dim, the pixel above-right and the previous channel of the
  # same pixel included, is seen (no blind spot), and no later or equal one.
  helpers.assert_autoregressive(dependency, ordering, dense=True)


def test_blind_spot_free_receptive_field_grows_with_depth():
  """One 3x3 layer: the shifted 2x3 vertical window above and the pixel to the left."""
  model = _model((4, 4, 1), 2, num_layers=1)
  variables = helpers.random_variables(model, scale=0.5)
  u = jax.random.uniform(jax.random.PRNGKey(2), (8, 4, 4, 1))
  dependency = helpers.dependency_matrix(
      lambda u: model.apply(variables, u, method='network'), u)
  seen = dependency[2 * 4 + 2].reshape(4, 4)  # Output pixel (2, 2).
  expected = np.zeros((4, 4), bool)
  expected[0:2, 1:4] = expected[2, 1] = True
  np.testing.assert_array_equal(seen, expected)


def test_conditional_logits_depend_on_the_label():
  model = _model((3, 3, 1), 2, num_classes=2)
  variables = helpers.random_variables(model)
  x = jnp.zeros((2, 3, 3, 1), jnp.int32)
  logits = model.apply(variables, x, jnp.array([0, 1]))
  assert not np.allclose(logits[0], logits[1])
  with pytest.raises(ValueError, match='class-conditional'):
    model.apply(variables, x)


NORMALISATION_CASES = {
    'binary-2x2': dict(event_shape=(2, 2, 1), num_levels=2),
    'binary-3x3': dict(event_shape=(3, 3, 1), num_levels=2),
    'binary-2x2-conditional': dict(event_shape=(2, 2, 1), num_levels=2, num_classes=3),
    'ternary-2x2-categorical': dict(event_shape=(2, 2, 1), num_levels=3),
    'binary-rgb-1x2': dict(event_shape=(1, 2, 3), num_levels=2),
}


@pytest.mark.parametrize('case', NORMALISATION_CASES)
def test_log_prob_sums_to_one(case):
  model = _model(**{'num_layers': 2, **NORMALISATION_CASES[case]})
  variables = helpers.random_variables(model, scale=0.5)
  log_prob = jax.jit(lambda x, y: model.apply(variables, x, y, method='log_prob'))
  for c in range(model.num_classes) if model.num_classes else [None]:
    helpers.assert_normalised(
        lambda x, c=c: log_prob(x, None if c is None else jnp.full([x.shape[0]], c)),
        model.event_shape, model.num_levels)


def test_impls_agree_on_one_parameter_tree():
  x = jnp.asarray(np.random.default_rng(0).integers(0, 4, (2, 4, 5, 3)), jnp.int32)
  y = jnp.array([0, 1])
  models = {impl: _model((4, 5, 3), 4, num_classes=2, conv_impl=impl, first_kernel_size=5)
            for impl in ('xla', 'taps')}
  shapes = {impl: jax.eval_shape(m.init, jax.random.PRNGKey(0), x, y) for impl, m in models.items()}
  assert shapes['xla'] == shapes['taps']
  variables = helpers.random_variables(models['xla'])
  logits = jax.jit(lambda v: {impl: m.apply(v, x, y) for impl, m in models.items()})(variables)
  chex.assert_shape(logits['taps'], (2, 4, 5, 3, 4))
  assert logits['taps'].dtype == jnp.float32
  np.testing.assert_allclose(logits['taps'], logits['xla'], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('event_shape,num_levels,num_classes', [
    ((5, 4, 1), 2, None), ((4, 3, 1), 5, 3), ((3, 3, 3), 4, None)])
def test_cached_sampling_returns_the_naive_samples(event_shape, num_levels, num_classes):
  # Kernels of 5 then 3 on small images: the vertical windows reach the zero padding
  # above and beside the image, which the caches must reproduce.
  model = _model(event_shape, num_levels, num_classes=num_classes, num_layers=3,
                 first_kernel_size=5)
  variables = helpers.random_variables(model, scale=0.5)
  given_mask = (np.arange(event_shape[0]) < 2)[:, None, None]  # The top rows given.
  helpers.assert_cached_sampling_equals_naive(model, variables, given_mask, all_levels=True)


def test_loss_falls_and_samples_are_valid_levels():
  helpers.assert_learns_stripes(_model((4, 4, 1), 2, num_layers=2))


def test_bfloat16_compute_keeps_float32_params_and_log_prob():
  helpers.assert_bfloat16_matches_float32(_model((4, 4, 3), 4, num_layers=2, dtype=jnp.bfloat16))


def test_experiment_script_runs_on_digits(tmp_path):
  flags = ['--dataset=digits', '--train_split=train[:256]', '--eval_split=train[256:320]',
           '--num_layers=2', '--channels=8', '--skip_channels=8', '--head_channels=8',
           '--first_kernel_size=3',
           '--batch_size=32', '--num_steps=2', '--eval_every=0', '--checkpoint_every=0',
           '--num_samples=2', f'--workdir={tmp_path / "run"}']
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'experiments', 'gated_pixelcnn.py'), *flags],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out['step'] == 2 and np.isfinite(out['bits_per_dim'])


def test_build_resolves_likelihood_and_options():
  binary = build_model('gated_pixelcnn', helpers.dataset_info((8, 8, 1), 2, 10),
                       {'conditional': True, 'num_layers': 3, 'conv_impl': 'xla'})
  assert isinstance(binary, GatedPixelCNN)
  assert (binary.likelihood, binary.num_classes, binary.num_layers) == ('bernoulli', 10, 3)
  assert binary.conv_impl == 'xla' and binary.event_shape == (8, 8, 1)
  rgb = build_model('gated_pixelcnn', helpers.dataset_info((8, 8, 3), 256), {},
                    dtype=jnp.bfloat16)
  assert (rgb.likelihood, rgb.num_levels, rgb.num_classes, rgb.dtype) == (
      'categorical', 256, None, jnp.bfloat16)


@pytest.mark.parametrize('options,match', [
    ({'num_layers': 0}, 'num_layers'),
    ({'num_layers': True}, 'num_layers'),
    ({'channels': 2}, 'channels'),
    ({'skip_channels': 2}, 'skip_channels'),
    ({'head_channels': 4.0}, 'head_channels'),
    ({'first_kernel_size': 4}, 'odd'),
    ({'first_kernel_size': 1}, 'first_kernel_size'),
    ({'kernel_size': 2}, 'odd'),
    ({'kernel_size': 0}, 'kernel_size'),
    ({'likelihood': 'bernoulli'}, 'binary'),
    ({'likelihood': 'logistic'}, 'likelihood'),
    ({'conv_impl': 'cudnn'}, 'conv_impl'),
    ({'conditional': True}, 'labels'),
    ({'conditional': 'yes'}, 'conditional'),
    ({'stack_channels': 3}, 'unknown option'),
])
def test_build_refuses(options, match):
  with pytest.raises(ConfigError, match=match) as error:
    build_model('gated_pixelcnn', helpers.dataset_info((4, 4, 3), 4), options)
  assert '\n' not in str(error.value)


@pytest.mark.parametrize('shape,num_levels,match', [
    ((16,), 2, 'images'), ((4, 4), 2, 'images'), ((4, 4, 1), None, '--quantize')])
def test_build_refuses_data_it_cannot_model(shape, num_levels, match):
  with pytest.raises(ConfigError, match=match):
    build_model('gated_pixelcnn', helpers.dataset_info(shape, num_levels), {})
