"""MAF and IAF: invertibility, logdets by Jacobian, MADE causality, normalisation, learning.

The models live in dulx.models.flows.autoregressive (module `autoregressive`).
"""

import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dulx import data as dulx_data
from dulx import sampling
from dulx.errors import ConfigError
from dulx.models import build_model
from dulx.models.flows import autoregressive
from dulx.models.flows import base
from dulx.models.flows.autoregressive import (AutoregressiveFlow, AutoregressiveLayer,
                                              MADEConditioner, rational_quadratic_spline)
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KINDS_AND_TRANSFORMS = [('maf', 'affine'), ('maf', 'spline'), ('iaf', 'affine'), ('iaf', 'spline')]


def _flow(kind, transform, event_shape, num_classes=None, scale=0.2, **fields):
  model = AutoregressiveFlow(event_shape=event_shape, num_classes=num_classes, kind=kind,
                             transform=transform, num_layers=2, hidden_sizes=(24,), num_bins=4,
                             **fields)
  return model, helpers.random_variables(model, scale=scale)


def _points(shape, n, seed=0):
  return jnp.asarray(1.5 * np.random.default_rng(seed).standard_normal((n, *shape)), jnp.float32)


@pytest.mark.parametrize('kind,transform,event_shape,jit', [
    ('maf', 'affine', (5,), True), ('maf', 'affine', (2, 2, 1), False),
    ('maf', 'spline', (2, 2, 1), True), ('iaf', 'affine', (5,), False),
    ('iaf', 'affine', (2, 2, 1), True), ('iaf', 'spline', (5,), True)])
def test_round_trips_and_logdets_cancel(kind, transform, event_shape, jit):
  model, variables = _flow(kind, transform, event_shape)
  forward = lambda x: model.apply(variables, x, method='forward')
  inverse = lambda z: model.apply(variables, z, method='inverse')
  if jit:
    forward, inverse = jax.jit(forward), jax.jit(inverse)
  x = _points(event_shape, 16)
  z, logdet = forward(x)
  chex.assert_shape((z, logdet), [(16, *event_shape), (16,)])
  x_back, inverse_logdet = inverse(z)
  # float32 maps within a factor ~10 of the identity: round-off stays near 1e-6 |x|.
  np.testing.assert_allclose(x_back, x, atol=1e-4)
  np.testing.assert_allclose(logdet + inverse_logdet, 0.0, atol=1e-4)
  z2 = _points(event_shape, 16, seed=1)
  z_back, logdet = forward(inverse(z2)[0])
  np.testing.assert_allclose(z_back, z2, atol=1e-4)


@pytest.mark.parametrize('kind,transform,num_classes', [
    ('maf', 'affine', 3), ('maf', 'spline', None), ('iaf', 'affine', None), ('iaf', 'spline', 3)])
def test_logdet_is_the_log_jacobian_determinant(kind, transform, num_classes):
  model, variables = _flow(kind, transform, (4,), num_classes=num_classes, scale=0.4)
  x = _points((4,), 6, seed=2)
  y = None if num_classes is None else jnp.arange(6) % 3
  one = lambda v, c: model.apply(variables, v[None], None if c is None else c[None],
                                 method='forward')[0][0]
  jacobians = jax.vmap(jax.jacfwd(one))(x, y) if y is not None else jax.vmap(
      jax.jacfwd(lambda v: one(v, None)))(x)
  _, expected = np.linalg.slogdet(np.asarray(jacobians, np.float64))
  # The float32 Jacobian is a product of two triangular factors (opposite orderings),
  # full and not well conditioned: its determinant is good to about 1e-4 relative.
  np.testing.assert_allclose(model.apply(variables, x, y, method='forward')[1], expected,
                             rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('order', [(0, 1, 2, 3, 4, 5), (5, 4, 3, 2, 1, 0), (2, 5, 0, 3, 1, 4)])
def test_made_conditioner_outputs_see_only_earlier_dimensions(order):
  conditioner = MADEConditioner(num_dims=6, params_per_dim=3, hidden_sizes=(48, 48), order=order,
                                mask_seed=1)
  u = jnp.asarray(np.random.default_rng(3).standard_normal((16, 6)), jnp.float32)
  context = jnp.ones((1, 4))
  shapes = jax.eval_shape(conditioner.init, jax.random.PRNGKey(0), u, context)
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype), shapes)
  network = lambda v: conditioner.apply(variables, v, jnp.broadcast_to(context, (v.shape[0], 4)))
  helpers.assert_autoregressive(helpers.dependency_matrix(network, u), np.asarray(order), dense=True)


@pytest.mark.parametrize('kind', ['maf', 'iaf'])
def test_each_layer_is_triangular_in_its_ordering(kind):
  for order in [(0, 1, 2, 3), (3, 2, 1, 0)]:
    layer = AutoregressiveLayer(num_dims=4, kind=kind, order=order, hidden_sizes=(32,))
    x = _points((4,), 8, seed=4)
    shapes = jax.eval_shape(lambda: layer.init(jax.random.PRNGKey(0), x, method='forward'))
    rng = np.random.default_rng(1)
    variables = jax.tree.map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype), shapes)
    dependency = helpers.dependency_matrix(
        lambda v: layer.apply(variables, v, method='forward')[0], x)
    rank = np.argsort(order)
    assert np.all(np.diag(dependency)), 'every z_d depends on its own x_d'
    later = rank[None, :] > rank[:, None]
    assert not np.any(dependency & later), 'z_j depends on an x_i later in the ordering'
    assert np.any(dependency & ~later & ~np.eye(4, dtype=bool)), 'no cross-dimension dependence'


@pytest.mark.parametrize('kind,transform,event_shape', [
    ('maf', 'affine', (1,)), ('maf', 'spline', (2,)), ('iaf', 'affine', (2,)), ('iaf', 'spline', (1,))])
def test_density_integrates_to_one(kind, transform, event_shape):
  model, variables = _flow(kind, transform, event_shape, scale=0.3)
  num_dims = event_shape[0]
  # The maps stay within a factor e^(+-1.5) of the identity at these parameter sizes
  # (and are the identity outside the splines' [-5, 5]), so N(0, I) pulled back puts
  # less than 1e-6 of its mass outside [-12, 12]^D; at spacing 0.03 the trapezoid rule
  # on this smooth density errs far below the tolerance of 2e-3.
  size = 4001 if num_dims == 1 else 801
  axis = np.linspace(-12.0, 12.0, size)
  grid = np.stack(np.meshgrid(*([axis] * num_dims), indexing='ij'), axis=-1).reshape(-1, num_dims)
  log_p = jax.jit(lambda x: model.apply(variables, x, method='log_prob'))(jnp.asarray(grid, jnp.float32))
  p = np.exp(np.asarray(log_p, np.float64)).reshape((size,) * num_dims)
  for _ in range(num_dims):
    p = np.trapezoid(p, axis, axis=0)
  assert abs(p - 1.0) < 2e-3, f'the density integrates to {p}'


def test_spline_starts_at_the_identity_and_is_the_identity_outside_its_interval():
  x = jnp.linspace(-7.0, 7.0, 57)
  y, log_derivative = rational_quadratic_spline(x, jnp.zeros((57, 11)), tail_bound=3.0)
  np.testing.assert_allclose(y, x, atol=1e-5)
  np.testing.assert_allclose(log_derivative, 0.0, atol=1e-5)
  row = np.random.default_rng(5).standard_normal(11)
  params = jnp.asarray(np.broadcast_to(row, (57, 11)), jnp.float32)  # One spline at 57 points.
  y, log_derivative = rational_quadratic_spline(x, params, tail_bound=3.0)
  outside = np.abs(np.asarray(x)) >= 3.0
  np.testing.assert_array_equal(np.asarray(y)[outside], np.asarray(x)[outside])
  assert np.all(np.diff(np.asarray(y)) > 0), 'the spline must be increasing'
  x_back, inverse_log_derivative = rational_quadratic_spline(y, params, tail_bound=3.0, inverse=True)
  np.testing.assert_allclose(x_back, x, atol=1e-4)
  np.testing.assert_allclose(log_derivative + inverse_log_derivative, 0.0, atol=1e-4)


def test_discrete_log_prob_counts_dequantization_and_logit_jacobians():
  model, variables = _flow('maf', 'affine', (2, 2, 1), num_levels=5)
  x = jnp.asarray(np.random.default_rng(6).integers(0, 5, (8, 2, 2, 1)), jnp.int32)
  rngs = {'dequantize': jax.random.PRNGKey(7)}
  log_p = model.apply(variables, x, method='log_prob', rngs=rngs)
  # The same stream at the same place in the module draws the same noise as log_prob.
  v = model.apply(variables, x, rngs=rngs,
                  method=lambda m, x: base.dequantize_uniform(m.make_rng('dequantize'), x, 5))
  assert np.all(base.levels_from_unit(v, 5) == x)
  w, logit_logdet = base.logit_preprocess(v, model.alpha)
  z, logdet = model.apply(variables, w, method='forward')
  expected = base.standard_normal_log_prob(z) + logdet + logit_logdet - 4 * np.log(5)
  np.testing.assert_allclose(log_p, expected, rtol=1e-5)
  other = model.apply(variables, x, method='log_prob', rngs={'dequantize': jax.random.PRNGKey(8)})
  assert not np.allclose(log_p, other), 'the dequantization noise must come from the rng'


def test_conditional_flow_depends_on_the_label():
  model, variables = _flow('maf', 'affine', (4,), num_classes=2, scale=0.5)
  x = jnp.tile(_points((4,), 1), (2, 1))
  log_p = model.apply(variables, x, jnp.array([0, 1]), method='log_prob')
  assert not np.allclose(log_p[0], log_p[1])
  with pytest.raises(ValueError, match='class-conditional'):
    model.apply(variables, x, method='log_prob')


@pytest.mark.parametrize('kind', ['maf', 'iaf'])
def test_loss_falls_on_digits_and_samples_are_valid_levels(kind):
  ds = dulx_data.load('digits', 'train[:128]')
  # The central 4x4 pixels: 16 dims keep IAF's 16 sequential passes per layer cheap.
  x, y = jnp.asarray(ds.x[:, 2:6, 2:6]), jnp.asarray(ds.y)
  model = AutoregressiveFlow(event_shape=(4, 4, 1), num_levels=17, num_classes=10, kind=kind,
                             num_layers=2, hidden_sizes=(64,))
  params = helpers.random_variables(model, scale=0.05)['params']

  def nll(params, rng):
    log_p = model.apply({'params': params}, x, y, method='log_prob', rngs={'dequantize': rng})
    return -log_p.mean() / 16

  before = nll(params, jax.random.PRNGKey(0))
  params, losses = helpers.fit_adam(nll, params, jax.random.PRNGKey(1), num_steps=25,
                                    learning_rate=5e-3)
  assert losses[-1] < before - 0.5, (before, losses[-1])
  variables = {'params': params}
  labels = jnp.arange(8) % 10
  for temperature in (1.0, 0.7):
    samples = np.asarray(sampling.sample(model, variables, jax.random.PRNGKey(2), 8, y=labels,
                                         temperature=temperature))
    chex.assert_shape(samples, (8, 4, 4, 1))
    assert samples.dtype == np.int32 and samples.min() >= 0 and samples.max() < 17


def test_continuous_samples_are_finite_and_shrink_with_temperature():
  model, variables = _flow('maf', 'spline', (2,), scale=0.3)
  warm = np.asarray(sampling.sample(model, variables, jax.random.PRNGKey(0), 2048))
  cold = np.asarray(sampling.sample(model, variables, jax.random.PRNGKey(0), 2048, temperature=0.7))
  for samples in (warm, cold):
    chex.assert_shape(samples, (2048, 2))
    chex.assert_tree_all_finite(samples)
  assert np.all(cold.std(0) < warm.std(0))


def test_builders_set_options():
  assert set(autoregressive.BUILDERS) == {'maf', 'iaf'}
  info = helpers.dataset_info((8, 8, 1), 17, 10)
  maf = build_model('maf', info, {'num_layers': 3, 'hidden_sizes': [32, 16], 'transform': 'spline',
                                  'num_bins': 5, 'tail_bound': 3.0, 'conditional': True})
  assert (maf.kind, maf.num_layers, maf.hidden_sizes, maf.transform) == ('maf', 3, (32, 16), 'spline')
  assert (maf.num_bins, maf.tail_bound, maf.num_classes, maf.num_levels) == (5, 3.0, 10, 17)
  iaf = build_model('iaf', helpers.dataset_info((2,), None), {})
  assert (iaf.kind, iaf.num_levels, iaf.num_classes, iaf.transform) == ('iaf', None, None, 'affine')


@pytest.mark.parametrize('name', ['maf', 'iaf'])
@pytest.mark.parametrize('options,match', [
    ({'num_layers': 0}, 'num_layers'),
    ({'hidden_sizes': (8, 0)}, 'hidden_sizes'),
    ({'transform': 'cubic'}, 'transform'),
    ({'num_bins': 1}, 'num_bins'),
    ({'tail_bound': 0.0}, 'tail_bound'),
    ({'tail_bound': float('inf')}, 'tail_bound must be a finite number'),
    ({'tail_bound': 'wide'}, 'tail_bound'),
    ({'conditional': True}, 'labels'),
    ({'conditional': 1}, 'conditional'),
    ({'likelihood': 'bernoulli'}, 'unknown option'),
])
def test_build_refuses(name, options, match):
  with pytest.raises(ConfigError, match=match) as error:
    build_model(name, helpers.dataset_info((8, 8, 1), 17), options)
  assert '\n' not in str(error.value)


def test_experiment_script_trains_a_few_steps_on_digits(tmp_path):
  name = 'maf'  # experiments/iaf.py is the same one-line script for the model 'iaf'.
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'experiments', f'{name}.py'),
       f'--flagfile={os.path.join(REPO, f"experiments/configs/{name}_digits.flags")}',
       '--num_layers=2', '--hidden_sizes=16', '--batch_size=32', '--num_steps=2',
       '--eval_every=0', '--checkpoint_every=0', '--num_samples=4',
       '--train_split=train[:256]', '--eval_split=train[256:320]', f'--workdir={tmp_path / "run"}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out['step'] == 2 and np.isfinite(out['bits_per_dim']) and np.isfinite(out['nll'])
