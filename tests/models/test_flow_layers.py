"""Flow layers, base.py and the dequantizers: invertibility, logdets by Jacobian, initialisation.

Tolerances: a float32 round trip through a few exp/affine maps loses a few ulps per
layer on O(1) values, so reconstructions agree to ~1e-5 absolute (1e-4 where values
reach ~10); logdets sum O(100) terms of O(1), so they agree with slogdet of the
Jacobian (computed in float32 by jacfwd, then float64) to ~1e-4 relative.
"""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dulx.models.flows import base
from dulx.models.flows import dequantization
from dulx.models.flows import layers
from dulx.models.flows.glow import GlowStep


def _perturb(variables, seed=0, scale=0.3):
  """Adds N(0, scale^2) to every parameter, so zero-initialised layers are not the identity."""
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda p: p + scale * rng.standard_normal(p.shape).astype(p.dtype),
                        variables.get('params', {}))
  return {**variables, 'params': params}


def _conv(hidden=4, num_blocks=1):
  return layers.ConvNet(hidden, num_blocks=num_blocks)


# name -> (flow factory, input shape, uses context). Tiny inputs: the Jacobian is [D, D].
LAYER_CASES = {
    'affine-checkerboard': (lambda: layers.Coupling(_conv(), mask='checkerboard', parity=1),
                            (2, 4, 4, 2), False),
    'affine-channel-context': (lambda: layers.Coupling(_conv(), mask='channel', parity=1),
                               (2, 2, 2, 4), True),
    'additive-vector': (lambda: layers.Coupling(layers.MLP((8,)), mask='checkerboard', affine=False),
                        (2, 9), False),
    'affine-vector-channel': (lambda: layers.Coupling(layers.MLP((8,)), mask='channel'), (2, 7), False),
    'scaling': (layers.Scaling, (2, 3, 3, 1), False),
    'actnorm': (layers.ActNorm, (2, 3, 3, 2), False),
    'batchnorm': (layers.BatchNorm, (2, 3, 3, 2), False),
    'invertible-1x1': (layers.Invertible1x1Conv, (2, 2, 3, 4), False),
    'squeeze': (layers.Squeeze, (2, 4, 2, 1), False),
    'unsqueeze': (layers.Unsqueeze, (2, 2, 1, 4), False),
    'reshape': (lambda: layers.Reshape((2, 2, 2), (8,)), (2, 2, 2, 2), False),
    'multiscale-chain': (lambda: layers.Chain([
        layers.Coupling(_conv(), mask='checkerboard'), layers.Squeeze(),
        layers.Coupling(_conv(num_blocks=0), mask='channel'),
        layers.FactorOut(layers.Chain([layers.ActNorm(), layers.Invertible1x1Conv()])),
        layers.Unsqueeze()]), (2, 4, 4, 1), True),
    'repeat-glow-step': (lambda: layers.Repeat(GlowStep(4), 3), (2, 2, 2, 4), False),
    'repeat-glow-step-rolled': (lambda: layers.Repeat(GlowStep(4), 3, unroll=1), (2, 2, 2, 4),
                                False),
    'repeat-remat-vector': (lambda: layers.Repeat(layers.Coupling(layers.MLP((8,)), mask='channel'),
                                                  2, remat=True), (2, 6), True),
}


def _setup(case, seed=0):
  factory, shape, uses_context = LAYER_CASES[case]
  flow = factory()
  x = 2.0 * jax.random.normal(jax.random.PRNGKey(seed), shape) + 0.5
  context = (jax.random.normal(jax.random.PRNGKey(seed + 1), (*shape[:-1], 3))
             if uses_context else None)
  variables = _perturb(jax.jit(functools.partial(flow.init, method='forward'))(
      jax.random.PRNGKey(2), x, context), seed)
  if 'batch_stats' in variables:  # Non-trivial running statistics for the eval-mode bijection.
    variables['batch_stats'] = jax.tree.map(lambda s: s + 0.5, variables['batch_stats'])
  return flow, variables, x, context


@pytest.mark.parametrize('case', LAYER_CASES)
def test_layer_inverts_and_logdet_is_log_abs_det_jacobian(case):
  flow, variables, x, context = _setup(case)

  def round_trip(x, context):
    z, logdet = flow.apply(variables, x, context, method='forward')
    x_back, logdet_back = flow.apply(variables, z, context, method='inverse')
    z_again, _ = flow.apply(variables, x_back, context, method='forward')
    return z, logdet, x_back, logdet_back, z_again

  # Compiled and eager (op by op) execution must both keep the invariants, and agree.
  results = {'jit': jax.jit(round_trip)(x, context), 'eager': round_trip(x, context)}
  for z, logdet, x_back, logdet_back, z_again in results.values():
    chex.assert_shape(logdet, (x.shape[0],))
    assert z.size == x.size
    np.testing.assert_allclose(x_back, x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(z_again, z, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logdet + logdet_back, 0.0, atol=1e-4 * (1 + np.abs(logdet).max()))
  chex.assert_trees_all_close(results['jit'], results['eager'], rtol=1e-5, atol=1e-5)

  # log |det dz/dx| of example 0 from the dense Jacobian of the flattened map.
  @jax.jit
  def jacobian(x_flat):
    def flat_forward(x_flat):
      z, _ = flow.apply(variables, x_flat.reshape(1, *x.shape[1:]),
                        None if context is None else context[:1], method='forward')
      return z.reshape(-1)
    return jax.jacfwd(flat_forward)(x_flat)
  sign, expected = np.linalg.slogdet(np.asarray(jacobian(x[:1].reshape(-1)), np.float64))
  assert sign != 0
  logdet = results['jit'][1]
  np.testing.assert_allclose(logdet[0], expected, rtol=1e-4, atol=1e-4)


def test_actnorm_initialises_to_zero_mean_unit_variance_on_the_init_batch():
  x = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (16, 4, 4, 3)) + jnp.array([1.0, -2.0, 5.0])
  for flow in (layers.ActNorm(), layers.Repeat(layers.ActNorm(), 3), GlowStep(4)):
    variables = jax.jit(functools.partial(flow.init, method='forward'))(jax.random.PRNGKey(1), x)
    if isinstance(flow, GlowStep):  # The first layer of a Glow step.
      z, _ = flow.apply(variables, x, method=lambda m, x: m.norm.forward(x))
    else:
      z, _ = flow.apply(variables, x, method='forward')
    np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 1, 2)), 1.0, atol=1e-4)
  # Inside the scan every copy was initialised on the data it sees: the first
  # normalises x, the later ones see normalised data and start as the identity.
  stacked = layers.Repeat(layers.ActNorm(), 3).init(jax.random.PRNGKey(1), x, method='forward')
  np.testing.assert_allclose(stacked['params']['layer']['bias'][0], -x.mean(axis=(0, 1, 2)), rtol=1e-5)
  np.testing.assert_allclose(stacked['params']['layer']['log_scale'][1:], 0.0, atol=1e-4)


def test_repeat_is_the_same_flow_rolled_partly_or_wholly_unrolled():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 2, 2, 4))
  flows = {unroll: layers.Repeat(GlowStep(4), 3, unroll=unroll) for unroll in (1, 2, 3, None)}
  variables = _perturb(flows[1].init(jax.random.PRNGKey(1), x, method='forward'))
  z_ref, logdet_ref = flows[1].apply(variables, x, method='forward')
  for unroll, flow in flows.items():
    chex.assert_trees_all_equal_shapes(flow.init(jax.random.PRNGKey(1), x, method='forward'),
                                       variables)
    z, logdet = jax.jit(functools.partial(flow.apply, method='forward'))(variables, x)
    np.testing.assert_allclose(z, z_ref, rtol=1e-5, atol=1e-5, err_msg=f'unroll={unroll}')
    np.testing.assert_allclose(logdet, logdet_ref, rtol=1e-5, atol=1e-5)
    x_back, _ = flow.apply(variables, z, method='inverse')
    np.testing.assert_allclose(x_back, x, rtol=1e-4, atol=1e-4)


def test_lu_1x1_conv_logdet_is_positions_times_slogdet_of_its_weight():
  conv = layers.Invertible1x1Conv()
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 4, 6))
  variables = _perturb(conv.init(jax.random.PRNGKey(1), x, method='forward'), scale=0.5)
  weight = np.asarray(conv.apply(variables, 6, method='weight'), np.float64)
  sign, log_abs_det = np.linalg.slogdet(weight)
  _, logdet = conv.apply(variables, x, method='forward')
  assert sign > 0
  np.testing.assert_allclose(logdet, 5 * 4 * log_abs_det, rtol=1e-5)
  # At initialisation W is a rotation: |det| = 1 and W^T W = I.
  fresh = np.asarray(conv.apply(conv.init(jax.random.PRNGKey(2), x, method='forward'), 6,
                                method='weight'))
  np.testing.assert_allclose(fresh.T @ fresh, np.eye(6), atol=1e-5)


def test_squeeze_is_space_to_depth_and_checkerboards_are_complementary():
  x = jnp.arange(2 * 4 * 6 * 3).reshape(2, 4, 6, 3)
  s = layers.squeeze(x)
  chex.assert_shape(s, (2, 2, 3, 12))
  np.testing.assert_array_equal(s[0, 1, 2].reshape(2, 2, 3), x[0, 2:4, 4:6])
  np.testing.assert_array_equal(layers.unsqueeze(s), x)
  with pytest.raises(ValueError, match='even'):
    layers.squeeze(jnp.zeros((1, 3, 4, 1)))
  for shape in [(1, 4, 5, 2), (1, 7)]:
    total = layers.checkerboard(shape, 0) + layers.checkerboard(shape, 1)
    np.testing.assert_array_equal(total, 1.0)
  np.testing.assert_array_equal(layers.checkerboard((1, 2, 2, 1), 0)[0, :, :, 0], [[1, 0], [0, 1]])


def test_batchnorm_uses_batch_statistics_in_training_and_updates_running_averages():
  norm = layers.BatchNorm(momentum=0.5)
  x = 2.0 * jax.random.normal(jax.random.PRNGKey(0), (64, 3, 3, 2)) + 3.0
  variables = norm.init(jax.random.PRNGKey(1), x, method='forward')
  (z, _), updated = norm.apply(variables, x, train=True, method='forward', mutable=['batch_stats'])
  np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
  np.testing.assert_allclose(updated['batch_stats']['mean'], 0.5 * x.mean(axis=(0, 1, 2)), rtol=1e-5)
  # Without a mutable collection training still runs, on batch statistics.
  z_fixed, _ = norm.apply(variables, x, train=True, method='forward')
  np.testing.assert_allclose(z_fixed, z, rtol=1e-6)


# base.py: the preprocessing every image flow shares.


def test_logit_preprocess_logdet_matches_the_jacobian_and_postprocess_inverts_it():
  v = jax.random.uniform(jax.random.PRNGKey(0), (3, 2, 2, 2))
  for alpha in (0.05, 1e-6):
    w, logdet = base.logit_preprocess(v, alpha)
    jacobian = jax.jacfwd(lambda t: base.logit_preprocess(t.reshape(1, -1), alpha)[0][0])(
        v[0].reshape(-1))
    _, expected = np.linalg.slogdet(np.asarray(jacobian, np.float64))
    np.testing.assert_allclose(logdet[0], expected, rtol=1e-5)
    np.testing.assert_allclose(base.logit_postprocess(w, alpha), v, atol=1e-5)
  # Any real w maps back into [0, 1), infinities included.
  v_back = base.logit_postprocess(jnp.array([-jnp.inf, -50.0, 0.0, 50.0, jnp.inf]))
  assert np.all((v_back >= 0) & (v_back < 1))


def test_dequantize_uniform_and_levels_round_trip_and_base_densities():
  x = jnp.asarray(np.random.default_rng(0).integers(0, 17, (8, 3, 3, 1)), jnp.int32)
  v = base.dequantize_uniform(jax.random.PRNGKey(0), x, 17)
  assert np.all((v >= 0) & (v < 1))
  np.testing.assert_array_equal(base.levels_from_unit(v, 17), x)
  assert base.discrete_log_prob_offset(9, 17) == pytest.approx(-9 * math.log(17))
  z = jnp.linspace(-4, 4, 12).reshape(2, 6)
  np.testing.assert_allclose(base.standard_normal_log_prob(z), stats.norm.logpdf(z).sum(-1), rtol=1e-5)
  np.testing.assert_allclose(base.standard_logistic_log_prob(z), stats.logistic.logpdf(z).sum(-1),
                             rtol=1e-5)


# Dequantizers (dulx.models.flows.dequantization), used by every image flow.


def test_uniform_dequantizer_has_log_q_zero():
  x = jnp.asarray(np.random.default_rng(0).integers(0, 4, (5, 2, 2, 1)), jnp.int32)
  deq = dequantization.make_dequantizer('uniform', 4)
  v, log_q = deq.apply({}, x, rngs={'dequantize': jax.random.PRNGKey(0)})
  np.testing.assert_array_equal(base.levels_from_unit(v, 4), x)
  np.testing.assert_array_equal(log_q, 0.0)
  with pytest.raises(ValueError, match='dequantization'):
    dequantization.make_dequantizer('gaussian', 4)


def test_variational_dequantizer_log_q_is_the_density_of_its_noise():
  """log q(u | x) = log N(eps) - log |det du/deps|, checked by the Jacobian in eps."""
  num_levels = 5
  deq = dequantization.VariationalDequantizer(num_levels, hidden=4, num_couplings=2)
  x = jnp.asarray(np.random.default_rng(0).integers(0, num_levels, (3, 2, 2, 2)), jnp.int32)
  rngs = {'params': jax.random.PRNGKey(0), 'dequantize': jax.random.PRNGKey(1)}
  variables = _perturb(deq.init(rngs, x), scale=0.5)

  @jax.jit
  def dequantize(variables, eps):
    return deq.apply(variables, x, eps, method='from_noise')

  eps = jax.random.normal(jax.random.PRNGKey(2), x.shape)
  v, log_q = dequantize(variables, eps)
  np.testing.assert_array_equal(base.levels_from_unit(v, num_levels), x)
  u_of_eps = jax.jit(jax.jacfwd(
      lambda e: num_levels * dequantize(variables, e.reshape(x.shape))[0][0].reshape(-1)))
  jacobian = np.asarray(u_of_eps(eps.reshape(-1)), np.float64)[:, :8]  # du_0 / deps_0.
  _, log_det = np.linalg.slogdet(jacobian)
  expected = float(base.standard_normal_log_prob(eps[:1])[0]) - log_det
  np.testing.assert_allclose(log_q[0], expected, rtol=1e-4)
  # __call__ draws eps from the 'dequantize' stream: new noise, same levels.
  v_drawn, _ = deq.apply(variables, x, rngs={'dequantize': jax.random.PRNGKey(3)})
  np.testing.assert_array_equal(base.levels_from_unit(v_drawn, num_levels), x)
  assert not np.allclose(v_drawn, v)


def test_saturated_variational_dequantizer_stays_in_the_cell_of_its_level():
  # Noise and parameters large enough that u = sigmoid(h) rounds to (or next to) 1,
  # where x + u would round up to x + 1 in float32 at the top levels.
  model = dequantization.VariationalDequantizer(256, hidden=4, num_couplings=1)
  x = jnp.arange(256, dtype=jnp.int32).reshape(1, 16, 16, 1)
  eps = jnp.full(x.shape, 30.0)
  shapes = jax.eval_shape(functools.partial(model.init, method='from_noise'),
                          jax.random.PRNGKey(0), x, eps)
  variables = jax.tree.map(lambda s: jnp.full(s.shape, 3.0, s.dtype), shapes)
  v, log_q = jax.jit(functools.partial(model.apply, method='from_noise'))(variables, x, eps)
  np.testing.assert_array_equal(base.levels_from_unit(v, 256), x)
  assert np.all(v < (np.asarray(x) + 1) / 256)
  chex.assert_tree_all_finite(log_q)
