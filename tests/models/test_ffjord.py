"""FFJORD: invertibility, exact-trace logdet by Jacobian, Hutchinson unbiasedness, learning.

Single-scale and multi-scale (num_scales=2 on 4x4 or 2x2 images) flows alike.

The model lives in dulx.models.flows.ffjord (module `ffjord`).
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
from dulx import train
from dulx.errors import ConfigError
from dulx.models import build_model
from dulx.models.flows.autoregressive import to_flow_space
from dulx.models.flows.ffjord import ADJOINTS, FFJORD, VectorField
from tests import helpers

pytest.importorskip('diffrax')  # The ODE solver; ffjord's builder refuses to run without it.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# Two scales: blocks on [H, W, C], squeeze, blocks on [H/2, W/2, 4C], factor out 2C
# channels, blocks on [H/2, W/2, 2C]. Small fields keep each ODE solve cheap.
MULTISCALE = {'field': 'conv', 'num_scales': 2, 'hidden_sizes': (4,)}


def _flow(event_shape, tolerance=1e-7, **fields):
  model = FFJORD(event_shape=event_shape, rtol=tolerance, atol=tolerance,
                 **{'hidden_sizes': (16, 16), **fields})
  return model, helpers.random_variables(model, scale=0.5)


@pytest.mark.parametrize('event_shape,jit,fields', [
    ((2,), True, {}), ((2, 2, 1), False, {}), ((3, 3, 2), True, {'field': 'conv'}),
    ((4, 4, 1), True, {**MULTISCALE, 'blocks_per_scale': 2})],
    ids=['2-jit', '2x2x1-nojit', 'conv-3x3x2-jit', 'multiscale-4x4x1-2blocks-jit'])
def test_round_trips_and_logdets_cancel(event_shape, jit, fields):
  model, variables = _flow(event_shape, **fields)
  forward = lambda x: model.apply(variables, x, method='forward')
  inverse = lambda z: model.apply(variables, z, method='inverse')
  if jit:
    forward, inverse = jax.jit(forward), jax.jit(inverse)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((8, *event_shape)), jnp.float32)
  z, logdet = forward(x)
  chex.assert_shape((z, logdet), [(8, *event_shape), (8,)])
  assert np.abs(np.asarray(z - x)).max() > 0.05, 'the flow should move the points'
  x_back, inverse_logdet = inverse(z)
  # Tolerances 1e-7 on an O(1) state: the two solves agree to float32 round-off.
  np.testing.assert_allclose(x_back, x, atol=1e-4)
  np.testing.assert_allclose(logdet + inverse_logdet, 0.0, atol=1e-4)


@pytest.mark.parametrize('event_shape,fields', [
    ((3,), {}), ((2, 3, 1), {'field': 'conv'}), ((4, 4, 2), MULTISCALE)],
    ids=['3', 'conv-2x3x1', 'multiscale-4x4x2'])
def test_exact_trace_logdet_is_the_log_jacobian_determinant_of_the_solved_map(event_shape, fields):
  # Multi-scale: the Jacobian of the whole map, squeezes and factor-outs included. By
  # jacrev: diffrax's checkpointed adjoint has no forward mode (jacfwd). The map is the
  # batch's, as the model solves it (step sizes chosen for the whole batch); example
  # b's Jacobian is the block [b, :, b, :] of the batch's [B, D, B, D].
  model, variables = _flow(event_shape, **fields)
  x = jnp.asarray(np.random.default_rng(1).standard_normal((3, *event_shape)), jnp.float32)

  def batch(v):  # z as [B, D], and (aux, from the same trace) the model's logdet [B].
    z, logdet = model.apply(variables, v, method='forward')
    return z.reshape(len(v), -1), logdet

  jacobian, logdet = jax.jit(jax.jacrev(batch, has_aux=True))(x)
  jacobian = np.asarray(jacobian, np.float64).reshape(len(x), model.num_dims, len(x), model.num_dims)
  jacobians = np.stack([jacobian[b, :, b] for b in range(len(x))])
  sign, expected = np.linalg.slogdet(jacobians)
  assert np.all(sign > 0), 'an ODE flow preserves orientation'
  assert np.abs(expected).min() > 0.05, 'the test needs a map with a non-trivial volume change'
  np.testing.assert_allclose(logdet, expected, atol=1e-4)


def test_hutchinson_estimate_is_unbiased_for_the_exact_log_prob():
  model, variables = _flow((3,), tolerance=1e-5)
  x = jnp.asarray(np.random.default_rng(2).standard_normal((4, 3)), jnp.float32)
  exact = model.apply(variables, x, method='log_prob')
  estimate = jax.jit(jax.vmap(lambda rng: model.apply(
      variables, x, train=True, method='log_prob', rngs={'noise': rng})))(
          jax.random.split(jax.random.PRNGKey(3), 256))
  estimate = np.asarray(estimate, np.float64)
  assert estimate.std(axis=0).min() > 0, 'the training estimate should be stochastic'
  standard_error = estimate.std(axis=0) / np.sqrt(estimate.shape[0])
  assert np.all(np.abs(estimate.mean(axis=0) - exact) < 5 * standard_error + 1e-3)


def test_conv_field_is_local_and_examples_do_not_interact():
  # A 3x3 convolution: df/dz at a pixel depends only on its 3x3 neighbourhood, one
  # layer of hidden channels reaching two pixels away; example b never sees example b'.
  model = VectorField(num_dims=6 * 6, hidden_sizes=(4,), image_shape=(6, 6, 1), parent=None)
  z = jnp.asarray(np.random.default_rng(4).standard_normal((2, 36)), jnp.float32)
  params = model.init(jax.random.PRNGKey(0), z, jnp.zeros([]))
  jacobian = np.asarray(jax.jacrev(lambda v: model.apply(params, v, jnp.asarray(0.3)))(z))
  np.testing.assert_array_equal(jacobian[0, :, 1], 0.0)  # [B, D, B, D]: no cross-example terms.
  rows, cols = np.divmod(np.arange(36), 6)
  distance = np.maximum(np.abs(rows[:, None] - rows[None]), np.abs(cols[:, None] - cols[None]))
  within = np.abs(jacobian[0, :, 0]) > 0
  assert within[distance <= 2].mean() > 0.9 and not within[distance > 2].any()


@pytest.mark.parametrize('num_scales', [1, 2])
def test_hutchinson_evaluation_estimates_the_exact_log_prob(num_scales):
  # num_scales=2: three blocks (2x2x1, 1x1x4, 1x1x2), one probe each.
  exact_model, variables = _flow((2, 2, 1), tolerance=1e-5, field='conv', num_scales=num_scales)
  estimating = exact_model.clone(eval_trace='hutchinson')
  x = jnp.asarray(np.random.default_rng(5).standard_normal((3, 2, 2, 1)), jnp.float32)
  exact = exact_model.apply(variables, x, method='log_prob')
  estimate = np.asarray(jax.jit(jax.vmap(lambda rng: estimating.apply(
      variables, x, method='log_prob', rngs={'noise': rng})))(
          jax.random.split(jax.random.PRNGKey(6), 256)), np.float64)
  assert estimate.std(axis=0).min() > 0, 'the evaluation estimate should be stochastic'
  standard_error = estimate.std(axis=0) / np.sqrt(estimate.shape[0])
  assert np.all(np.abs(estimate.mean(axis=0) - exact) < 5 * standard_error + 1e-3)


def test_multiscale_log_prob_is_the_base_density_of_every_dim_plus_the_logdets():
  model, variables = _flow((4, 4, 1), tolerance=1e-5, num_levels=4, **MULTISCALE)
  assert model.block_shapes == ((4, 4, 1), (2, 2, 4), (2, 2, 2))
  x = jnp.asarray(np.random.default_rng(7).integers(0, 4, (3, 4, 4, 1)), jnp.int32)
  rngs = {'dequantize': jax.random.PRNGKey(8)}
  log_p = model.apply(variables, x, method='log_prob', rngs=rngs)
  # log_prob's draw of u (its first 'dequantize' key), and the flow's output on it.
  w = model.apply(variables, x, rngs=rngs, method=lambda m, x: to_flow_space(
      m.make_rng('dequantize'), x, m.num_levels, m.alpha)[0])
  s = np.asarray(jax.nn.sigmoid(w), np.float64)
  np.testing.assert_array_equal(np.floor((s - model.alpha) / (1 - 2 * model.alpha) * 4), x)
  z, logdet = model.apply(variables, w, method='forward')
  z = np.asarray(z, np.float64).reshape(3, 16)
  base_density = -0.5 * (z**2).sum(-1) - 8 * np.log(2 * np.pi)  # N(0, I) over all 16 dims.
  preprocessing = (np.log(1 - 2 * model.alpha) - np.log(s) - np.log1p(-s)).reshape(3, 16).sum(-1)
  np.testing.assert_allclose(log_p, base_density + logdet + preprocessing - 16 * np.log(4),
                             rtol=1e-5)


def test_multiscale_samples_at_low_temperature_are_finite_and_in_range():
  model, variables = _flow((4, 4, 1), tolerance=1e-5, num_levels=4, **MULTISCALE)
  points = np.asarray(sampling.sample(model.clone(num_levels=None), variables,
                                      jax.random.PRNGKey(9), 8, temperature=0.7))
  chex.assert_shape(points, (8, 4, 4, 1))
  chex.assert_tree_all_finite(points)
  samples = np.asarray(sampling.sample(model, variables, jax.random.PRNGKey(9), 8, temperature=0.7))
  assert samples.dtype == np.int32 and samples.min() >= 0 and samples.max() < 4


def test_density_integrates_to_one():
  model, variables = _flow((2,), tolerance=1e-5)
  # The flow moves N(0, I) by O(1) over T = 1, so [-9, 9]^2 holds all but ~1e-10 of
  # the mass; at spacing 0.1 the trapezoid rule on this smooth density errs < 1e-4.
  axis = np.linspace(-9.0, 9.0, 181)
  grid = np.stack(np.meshgrid(axis, axis, indexing='ij'), axis=-1).reshape(-1, 2)
  log_p = jax.jit(lambda x: model.apply(variables, x, method='log_prob'))(jnp.asarray(grid, jnp.float32))
  p = np.exp(np.asarray(log_p, np.float64)).reshape(181, 181)
  total = np.trapezoid(np.trapezoid(p, axis, axis=0), axis)
  assert abs(total - 1.0) < 2e-3, f'the density integrates to {total}'


def test_loss_falls_and_samples_are_valid():
  ds = dulx_data.load('digits', 'train[:64]')
  x = jnp.asarray(ds.x[:, 3:5, 3:5])  # 2x2 central pixels, 17 levels: 4 dims.
  model = FFJORD(event_shape=(2, 2, 1), num_levels=17, hidden_sizes=(32,), rtol=1e-2, atol=1e-2)
  params = helpers.random_variables(model, scale=0.1)['params']

  def nll(params, rng):
    rngs = dict(zip(('dequantize', 'noise'), jax.random.split(rng)))
    return -model.apply({'params': params}, x, train=True, method='log_prob', rngs=rngs).mean() / 4

  before = nll(params, jax.random.PRNGKey(0))
  params, losses = helpers.fit_adam(nll, params, jax.random.PRNGKey(1), num_steps=20,
                                    learning_rate=2e-2)
  assert losses[-5:].mean() < before - 0.2, (before, losses)
  for temperature in (1.0, 0.7):
    samples = np.asarray(sampling.sample(model, {'params': params}, jax.random.PRNGKey(2), 16,
                                         temperature=temperature))
    chex.assert_shape(samples, (16, 2, 2, 1))
    assert samples.dtype == np.int32 and samples.min() >= 0 and samples.max() < 17


def test_rnode_penalties_are_the_integrals_along_the_solved_path():
  # K = int_0^T mean_d f_d^2 dt and J = int_0^T mean_d (eps^T df/dz)_d^2 dt per example,
  # sown as batch means times the weights. Checked against classical RK4 on 400 fixed
  # steps (error O(h^4) ~ 1e-10 here) with explicit per-example Jacobians.
  model, variables = _flow((3,), kinetic_weight=0.3, jacobian_weight=0.7)
  rng = np.random.default_rng(10)
  x = jnp.asarray(rng.standard_normal((4, 3)), jnp.float32)
  eps = jnp.asarray(rng.choice([-1.0, 1.0], (4, 3)), jnp.float32)
  regularized = lambda m, x: m._forward_scale(0, x, [eps], regularize=True)
  (z, logdet), sown = model.apply(variables, x, method=regularized, mutable=['losses', 'metrics'])

  field = model._field((3,))
  params = {'params': variables['params']['fields']['block_0']}

  def rates(t, state):
    z = state[:, :3]
    dz = field.apply(params, z, t)
    jacobians = jax.vmap(jax.jacrev(lambda v: field.apply(params, v[None], t)[0]))(z)
    row = jnp.einsum('bi,bij->bj', eps, jacobians)
    return jnp.concatenate([dz, jnp.mean(dz**2, -1, keepdims=True),
                            jnp.mean(row**2, -1, keepdims=True)], axis=-1)

  def rk4(state, k, h=1.0 / 400):
    t = k * h
    k1 = rates(t, state)
    k2 = rates(t + h / 2, state + h / 2 * k1)
    k3 = rates(t + h / 2, state + h / 2 * k2)
    k4 = rates(t + h, state + h * k3)
    return state + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), None

  start = jnp.concatenate([x, jnp.zeros((4, 2))], axis=-1)
  end, _ = jax.lax.scan(rk4, start, jnp.arange(400.0))
  kinetic, frobenius = np.asarray(end[:, 3]), np.asarray(end[:, 4])
  assert kinetic.min() > 0.01 and frobenius.min() > 0.01, 'the test needs a field that moves'
  np.testing.assert_allclose(z, end[:, :3], atol=1e-5)
  np.testing.assert_allclose(sown['losses']['kinetic_penalty'], [0.3 * kinetic.mean()], rtol=1e-4)
  np.testing.assert_allclose(sown['losses']['jacobian_penalty'], [0.7 * frobenius.mean()],
                             rtol=1e-4)
  (steps,) = sown['metrics']['ode_steps']
  assert steps > 1
  # The penalties ride along: the map and its logdet are those of the plain forward pass
  # (up to the tolerance, the error control now also sees K and J).
  plain_z, plain_logdet = model.apply(variables, x, [eps], method='forward')
  np.testing.assert_allclose(z, plain_z, atol=1e-5)
  np.testing.assert_allclose(logdet, plain_logdet, atol=1e-5)


@pytest.mark.parametrize('weights,penalties', [
    ({}, set()), ({'kinetic_weight': 0.1}, {'kinetic_penalty'}),
    ({'kinetic_weight': 0.1, 'jacobian_weight': 0.2}, {'kinetic_penalty', 'jacobian_penalty'})],
    ids=['none', 'kinetic', 'both'])
def test_training_loss_adds_only_the_weighted_penalties(weights, penalties):
  model, variables = _flow((3,), tolerance=1e-4, hidden_sizes=(8,), **weights)
  x = jnp.asarray(np.random.default_rng(11).standard_normal((3, 3)), jnp.float32)
  rngs = {'noise': jax.random.PRNGKey(12)}
  loss, (metrics, model_state) = jax.jit(train.likelihood_loss(model, 3))(
      variables['params'], {}, {'x': x}, rngs)
  assert model_state == {}
  assert {'kinetic_penalty', 'jacobian_penalty'} & set(metrics) == penalties
  assert metrics['ode_steps'] >= 1
  log_p = jax.jit(lambda v, x: model.apply(v, x, train=True, method='log_prob', rngs=rngs))(
      variables, x)
  np.testing.assert_allclose(metrics['nll'], -log_p.mean(), rtol=1e-5)
  total = sum(float(metrics[name]) for name in penalties)
  assert all(metrics[name] > 0 for name in penalties)
  np.testing.assert_allclose(loss, metrics['nll'] / 3 + total, rtol=1e-5)
  # Evaluation is untouched: the same likelihood, nothing sown.
  _, sown = model.apply(variables, x, method='log_prob', rngs=rngs, mutable=['losses'])
  assert sown == {}


def test_backsolve_gradient_approximates_the_checkpointed_one():
  # 'checkpoint' differentiates the solver's own steps, the exact gradient of the computed
  # loss; 'backsolve' solves the adjoint ODE backwards, an approximation whose error
  # follows the solver's tolerances (1e-7 here, on O(1) states and gradients up to 0.46:
  # the two differ by at most 1.2e-7).
  x = jnp.asarray(np.random.default_rng(13).standard_normal((4, 3)), jnp.float32)
  rngs = {'noise': jax.random.PRNGKey(14)}
  grads = {}
  for adjoint in ADJOINTS:
    model, variables = _flow((3,), hidden_sizes=(8,), adjoint=adjoint)
    loss = train.likelihood_loss(model, 3)
    grads[adjoint] = jax.jit(jax.grad(lambda p: loss(p, {}, {'x': x}, rngs)[0]))(variables['params'])
  assert min(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads['checkpoint'])) > 1e-3
  chex.assert_trees_all_close(grads['backsolve'], grads['checkpoint'], rtol=1e-3, atol=1e-6)


def test_pmap_needs_the_backsolve_adjoint(tmp_path):
  config = train.Config(model='ffjord', model_options={'hidden_sizes': [8]}, dataset='toy2d:two_moons',
                        train_split='train[:64]', eval_split='test[:16]', batch_size=8,
                        num_steps=2, parallel='pmap')
  with pytest.raises(ConfigError, match='--parallel=pmap: .*--adjoint=backsolve'):
    train.train_and_evaluate(config, str(tmp_path / 'checkpoint'))
  assert not os.path.exists(tmp_path / 'checkpoint')
  config = config.replace(model_options={'hidden_sizes': [8], 'adjoint': 'backsolve'})
  final = train.train_and_evaluate(config, str(tmp_path / 'backsolve'))
  assert np.isfinite(final['nll'])


def test_build_sets_options():
  model = build_model('ffjord', helpers.dataset_info((2,), None),
                      {'hidden_sizes': [8, 8], 'activation': 'tanh', 'integration_time': 0.5,
                       'rtol': 1e-4, 'atol': 1e-6, 'max_steps': 50})
  assert (model.hidden_sizes, model.activation, model.integration_time) == ((8, 8), 'tanh', 0.5)
  assert (model.rtol, model.atol, model.max_steps, model.num_levels) == (1e-4, 1e-6, 50, None)
  assert (model.field, model.eval_trace, model.num_scales, model.blocks_per_scale, model.adjoint) == (
      'mlp', 'exact', 1, 1, 'checkpoint')
  images = build_model('ffjord', helpers.dataset_info((4, 4, 1), 256),
                       {'field': 'conv', 'eval_trace': 'hutchinson', 'num_scales': 3,
                        'blocks_per_scale': 2, 'kinetic_weight': 0.01, 'jacobian_weight': 0,
                        'adjoint': 'backsolve'})
  assert (images.field, images.eval_trace, images.num_levels, images.adjoint) == (
      'conv', 'hutchinson', 256, 'backsolve')
  assert (images.num_scales, images.blocks_per_scale, len(images.block_shapes)) == (3, 2, 10)
  assert (images.kinetic_weight, images.jacobian_weight, images.regularized) == (0.01, 0.0, True)
  assert (model.kinetic_weight, model.jacobian_weight, model.regularized) == (0.0, 0.0, False)


@pytest.mark.parametrize('shape,options,match', [
    ((2,), {'hidden_sizes': ()}, 'hidden_sizes'),
    ((2,), {'hidden_sizes': (8, 0)}, 'hidden_sizes'),
    ((2,), {'activation': 'relu'}, 'activation'),
    ((2,), {'integration_time': 0.0}, 'integration_time'),
    ((2,), {'rtol': -1e-5}, 'rtol'),
    ((2,), {'atol': 0}, 'atol'),
    ((2,), {'atol': float('inf')}, 'atol must be a finite number'),
    ((2,), {'integration_time': float('inf')}, 'integration_time must be a finite number'),
    ((2,), {'max_steps': 0}, 'max_steps'),
    ((2,), {'conditional': True}, 'unknown option'),
    ((2,), {'field': 'conv'}, 'needs images'),
    ((2,), {'field': 'resnet'}, 'field'),
    ((2,), {'eval_trace': 'approximate'}, 'eval_trace'),
    ((2,), {'adjoint': 'direct'}, 'adjoint'),
    ((2,), {'num_scales': 2}, 'needs --field=conv'),
    ((4, 4, 1), {'num_scales': 2}, 'needs --field=conv'),
    ((4, 4, 1), {'field': 'conv', 'num_scales': 0}, 'num_scales'),
    ((6, 6, 1), {'field': 'conv', 'num_scales': 3}, 'height and width divisible by 4'),
    ((4, 4, 1), {'field': 'conv', 'blocks_per_scale': 0}, 'blocks_per_scale'),
    ((2,), {'kinetic_weight': -0.1}, 'kinetic_weight'),
    ((2,), {'jacobian_weight': float('nan')}, 'jacobian_weight'),
    ((2,), {'kinetic_weight': float('inf')}, 'kinetic_weight must be a finite number >= 0'),
    ((2,), {'jacobian_weight': True}, 'jacobian_weight'),
])
def test_build_refuses(shape, options, match):
  with pytest.raises(ConfigError, match=match) as error:
    build_model('ffjord', helpers.dataset_info(shape, None), options)
  assert '\n' not in str(error.value)


def test_build_without_diffrax_says_what_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, 'diffrax', None)  # What `import diffrax` finds uninstalled.
  with pytest.raises(ConfigError, match='pip install diffrax'):
    build_model('ffjord', helpers.dataset_info((2,), None), {})


def test_experiment_script_trains_a_few_steps_on_digits(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'experiments', 'ffjord.py'),
       f'--flagfile={os.path.join(REPO, "experiments/configs/ffjord_digits.flags")}',
       '--hidden_sizes=8', '--rtol=1e-2', '--atol=1e-2', '--batch_size=16', '--num_steps=2',
       '--eval_every=0', '--checkpoint_every=0', '--num_samples=4', '--eval_batch_size=16',
       '--kinetic_weight=0.01', '--jacobian_weight=0.01', '--log_every=1',
       '--train_split=train[:64]', '--eval_split=train[64:80]', f'--workdir={tmp_path / "run"}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out['step'] == 2 and np.isfinite(out['bits_per_dim']) and np.isfinite(out['nll'])
  records = train.read_metrics(str(tmp_path / 'run' / 'metrics.jsonl'))
  assert [r['step'] for r in records] == [1, 2]
  for r in records:  # RNODE's penalties and the solver's step count, in the train log.
    assert r['kinetic_penalty'] > 0 and r['jacobian_penalty'] > 0 and r['ode_steps'] >= 1
