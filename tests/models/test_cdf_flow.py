"""CDF flows: invertibility, logdets by Jacobian, normalisation, learning, sampling, builder, script."""

import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from dulx import data as dulx_data
from dulx import sampling
from dulx import viz
from dulx.errors import ConfigError
from dulx.models import build_model
from dulx.models.flows.cdf_flow import CDFFlow, bisect
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CASES = [(1, 'logistic'), (1, 'gaussian'), (2, 'logistic'), (2, 'gaussian')]


def _flow(num_dims, component):
  model = CDFFlow(event_shape=(num_dims,), component=component, num_components=4,
                  hidden_sizes=(16,))
  return model, helpers.random_variables(model, scale=0.3)


def _points(num_dims, n=64, seed=0):
  return jnp.asarray(2.0 * np.random.default_rng(seed).standard_normal((n, num_dims)), jnp.float32)


@pytest.mark.parametrize('jit', [True, False], ids=['jit', 'nojit'])
@pytest.mark.parametrize('num_dims,component', CASES)
def test_round_trips_and_logdets_cancel(num_dims, component, jit):
  model, variables = _flow(num_dims, component)
  forward = lambda x: model.apply(variables, x, method='forward')
  inverse = lambda z: model.apply(variables, z, method='inverse')
  if jit:
    forward, inverse = jax.jit(forward), jax.jit(inverse)
  x = _points(num_dims)
  z, logdet = forward(x)
  chex.assert_shape((z, logdet), [(64, num_dims), (64,)])
  assert np.all((np.asarray(z) > 0) & (np.asarray(z) < 1))
  x_back, inverse_logdet = inverse(z)
  # Bisection stops at float32 rounding of z = F(x): |dx| ~ 1e-7 / p(x) with p(x) > 1e-3 here.
  np.testing.assert_allclose(x_back, x, atol=2e-4)
  np.testing.assert_allclose(logdet + inverse_logdet, 0.0, atol=1e-3)
  # The other way: uniform z -> x -> z.
  u = jax.random.uniform(jax.random.PRNGKey(1), (64, num_dims), minval=0.01, maxval=0.99)
  x_u, inverse_logdet = inverse(u)
  z_u, logdet = forward(x_u)
  np.testing.assert_allclose(z_u, u, atol=1e-5)
  np.testing.assert_allclose(logdet + inverse_logdet, 0.0, atol=1e-4)
  # log p(x) is the forward logdet: the uniform base has log-density 0.
  np.testing.assert_allclose(model.apply(variables, x, method='log_prob'), forward(x)[1], rtol=1e-6)


@pytest.mark.parametrize('num_dims,component', CASES)
def test_logdet_is_the_log_jacobian_determinant(num_dims, component):
  model, variables = _flow(num_dims, component)
  x = _points(num_dims, n=8, seed=1)
  one = lambda v: model.apply(variables, v[None], method='forward')[0][0]
  jacobians = jax.vmap(jax.jacfwd(one))(x)
  sign, expected = np.linalg.slogdet(np.asarray(jacobians, np.float64))
  assert np.all(sign > 0), 'the flow must be increasing (triangular, positive diagonal)'
  np.testing.assert_allclose(model.apply(variables, x, method='forward')[1], expected, atol=1e-4)
  # The Jacobian is lower-triangular: z_1 does not depend on x_2.
  if num_dims == 2:
    np.testing.assert_array_equal(np.asarray(jacobians)[:, 0, 1], 0.0)


@pytest.mark.parametrize('num_dims,component', CASES)
def test_density_integrates_to_one(num_dims, component):
  model, variables = _flow(num_dims, component)
  # With parameters ~ N(0, 0.3^2) the means lie within +-3 and the scales within
  # [0.3, 3], so the box [-40, 40] leaves out less than e^-12 of logistic tails, and
  # the trapezoid rule at spacing h <= scale / 3 is accurate far beyond 1e-3 for
  # such smooth, fast-decaying integrands.
  size = 8001 if num_dims == 1 else 801
  axis = np.linspace(-40.0, 40.0, size)
  grid = np.stack(np.meshgrid(*([axis] * num_dims), indexing='ij'), axis=-1).reshape(-1, num_dims)
  log_p = jax.jit(lambda x: model.apply(variables, x, method='log_prob'))(jnp.asarray(grid, jnp.float32))
  p = np.exp(np.asarray(log_p, np.float64)).reshape((size,) * num_dims)
  for _ in range(num_dims):
    p = np.trapezoid(p, axis, axis=0)
  assert abs(p - 1.0) < 1e-3, f'the density integrates to {p}'


def test_loss_falls_on_two_moons_and_samples_are_finite():
  x = jnp.asarray(dulx_data.load('toy2d:two_moons', 'train[:2048]').x)
  model = CDFFlow(event_shape=(2,), num_components=8, hidden_sizes=(32,))
  params = helpers.random_variables(model, scale=0.1)['params']
  nll = lambda p, _: -model.apply({'params': p}, x, method='log_prob').mean()
  before = nll(params, None)
  params, losses = helpers.fit_adam(nll, params, jax.random.PRNGKey(0), num_steps=150,
                                    learning_rate=1e-2)
  assert losses[-1] < before - 0.5, (before, losses[-1])
  variables = {'params': params}
  for temperature in (1.0, 0.7):
    samples = np.asarray(sampling.sample(model, variables, jax.random.PRNGKey(3), 512,
                                         temperature=temperature))
    chex.assert_shape(samples, (512, 2))
    chex.assert_tree_all_finite(samples)
    assert np.all(np.abs(samples) < 10.0)
  # A fitted flow's samples look like the data: moments within a few standard errors.
  samples = np.asarray(sampling.sample(model, variables, jax.random.PRNGKey(4), 4096))
  np.testing.assert_allclose(samples.mean(0), np.asarray(x).mean(0), atol=0.15)
  np.testing.assert_allclose(samples.std(0), np.asarray(x).std(0), rtol=0.15)
  # Lower temperature concentrates the samples.
  cold = np.asarray(sampling.sample(model, variables, jax.random.PRNGKey(4), 4096, temperature=0.5))
  assert np.all(cold.std(0) < samples.std(0))
  # The density and latent pictures of the fitted flow.
  grid = viz.grid_points((-4.0, 4.0), 2, 64)
  picture = viz.density_plot(np.asarray(model.apply(variables, grid, method='log_prob')), 2)
  assert picture.dtype == np.uint8 and picture.shape == (256, 256) and picture.max() == 255
  z, _ = model.apply(variables, x, method='forward')
  latent = viz.latent_plot(np.asarray(z), model.latent_bounds)
  assert latent.dtype == np.uint8 and latent.shape == (256, 256) and latent.max() == 255


def test_bisection_solves_an_increasing_function():
  target = jnp.linspace(-7.0, 7.0, 11)
  x = bisect(lambda v: v**3 - v, target, jnp.full(11, 1.0), jnp.full(11, 3.0), 40)
  inside = (target >= 0.0) & (target <= 24.0)
  np.testing.assert_allclose((x**3 - x)[inside], target[inside], atol=1e-4)
  np.testing.assert_allclose(x[~inside], 1.0, atol=1e-6)  # Below the range: the low end.


def test_build_sets_options_from_the_data():
  info = dulx_data.load('toy1d:bimodal', 'test').info
  model = build_model('cdf_flow', info, {'num_components': 3, 'component': 'gaussian',
                                        'hidden_sizes': [8]})
  assert (model.event_shape, model.num_components, model.component) == ((1,), 3, 'gaussian')
  assert model.init_range == info.bounds and model.hidden_sizes == (8,)


@pytest.mark.parametrize('shape,num_levels,options,match', [
    ((2,), 64, {}, 'continuous'),
    ((3,), None, {}, '1-D or 2-D'),
    ((4, 4, 1), None, {}, '1-D or 2-D'),
    ((2,), None, {'num_components': 0}, 'num_components'),
    ((2,), None, {'component': 'cauchy'}, 'component'),
    ((2,), None, {'hidden_sizes': (8, 0)}, 'hidden_sizes'),
    ((2,), None, {'bisection_steps': 0}, 'bisection_steps'),
    ((2,), None, {'conditional': True}, 'unknown option'),
])
def test_build_refuses(shape, num_levels, options, match):
  with pytest.raises(ConfigError, match=match) as error:
    build_model('cdf_flow', helpers.dataset_info(shape, num_levels), options)
  assert '\n' not in str(error.value)


def test_experiment_script_trains_a_few_steps(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'experiments', 'cdf_flow.py'),
       f'--flagfile={os.path.join(REPO, "experiments/configs/cdf_flow_toy2d.flags")}',
       '--num_components=3', '--hidden_sizes=8', '--num_steps=3', '--eval_every=0',
       '--checkpoint_every=0', '--num_samples=16', '--train_split=train[:512]',
       '--eval_split=test[:256]', f'--workdir={tmp_path / "run"}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out['step'] == 3 and np.isfinite(out['bits_per_dim']) and np.isfinite(out['nll'])
  # The 2-D data get the sample histogram, the learned density and the latent picture.
  samples = tmp_path / 'run' / 'samples'
  assert sorted(os.listdir(samples)) == [
      'step_00000003.png', 'step_00000003_density.png', 'step_00000003_latent.png']
  for name in os.listdir(samples):
    picture = np.asarray(Image.open(samples / name))
    assert picture.dtype == np.uint8 and picture.shape == (256, 256) and picture.max() == 255
