"""NICE and RealNVP (dulx.models.flows.coupling): invertibility, every Jacobian counted,
learning, sampling, class conditioning, builder errors, the experiment scripts.

Tolerances as in test_flow_layers.py: float32 round trips agree to ~1e-4; a model's
log-likelihood sums ~100 terms of O(1-10), so its decomposition agrees to ~1e-4
relative.
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

from dulx import data, sampling
from dulx.errors import ConfigError
from dulx.models import build_model
from dulx.models.flows import base
from dulx.models.flows.coupling import NICE, RealNVP
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MODELS = {
    'nice': lambda **kw: NICE(event_shape=(4, 4, 1), num_levels=17, hidden_sizes=(16,), **kw),
    'realnvp-batchnorm': lambda **kw: RealNVP(event_shape=(4, 4, 2), num_levels=17, hidden=8,
                                              num_blocks=1, **kw),
    'realnvp-actnorm-variational': lambda **kw: RealNVP(
        event_shape=(4, 4, 1), num_levels=17, num_scales=1, hidden=8, num_blocks=0, norm='act',
        dequantization='variational', dequantization_hidden=4, **kw),
}


def _digits(num: int, size: int = 4) -> jax.Array:
  """The first `num` embedded digits (17 levels), cropped to size x size at the centre."""
  x = data.load('digits', f'train[:{num}]').x
  start = (8 - size) // 2
  return jnp.asarray(x[:, start:start + size, start:start + size], jnp.int32)


def _init(model, x, y=None, perturb=0.1):
  rngs = {'params': jax.random.PRNGKey(0), 'dequantize': jax.random.PRNGKey(1)}
  variables = jax.jit(model.init)(rngs, x, y)
  rng = np.random.default_rng(0)  # Zero-initialised layers would make the flow trivially invertible.
  params = jax.tree.map(lambda p: p + perturb * rng.standard_normal(p.shape).astype(p.dtype),
                        variables['params'])
  return {**variables, 'params': params}


def _levels(model, num, seed=0):
  shape = (num, *model.event_shape)
  return jnp.asarray(np.random.default_rng(seed).integers(0, model.num_levels, shape), jnp.int32)


@pytest.mark.parametrize('name', MODELS)
def test_log_prob_counts_every_jacobian(name):
  """log_prob = log p_Z(z) + log|det dz/dw| (by jacfwd) + logit logdet - D log L - log q."""
  model = MODELS[name]()
  x = _levels(model, 3)
  variables = _init(model, x)
  rngs = {'dequantize': jax.random.PRNGKey(5)}

  def parts(m, x):
    v, log_q = m.dequantizer(x)  # The same draw as log_prob's: same module, same rng.
    w, logdet_logit = base.logit_preprocess(v, m.alpha)
    z, logdet_flow = m.flow.forward(w)
    w_back, logdet_back = m.flow.inverse(z)
    return v, log_q, w, logdet_logit, z, logdet_flow, w_back, logdet_back

  @jax.jit
  def run(variables):
    log_prob = model.apply(variables, x, rngs=rngs, method='log_prob')
    return log_prob, model.apply(variables, x, rngs=rngs, method=parts)

  log_prob, (v, log_q, w, logdet_logit, z, logdet_flow, w_back, logdet_back) = run(variables)
  np.testing.assert_array_equal(base.levels_from_unit(v, model.num_levels), x)
  np.testing.assert_allclose(w_back, w, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(logdet_flow + logdet_back, 0.0, atol=1e-3)

  jacobian = jax.jit(jax.jacfwd(lambda w0: model.apply(
      variables, w0.reshape(1, *model.event_shape), method=lambda m, w: m.flow.forward(w)[0]
  ).reshape(-1)))(w[0].reshape(-1))
  sign, log_det = np.linalg.slogdet(np.asarray(jacobian, np.float64))
  assert sign != 0
  np.testing.assert_allclose(logdet_flow[0], log_det, rtol=1e-4, atol=1e-3)

  log_pz = (base.standard_logistic_log_prob(z) if model.prior == 'logistic'
            else base.standard_normal_log_prob(z))
  expected = (log_pz + logdet_flow + logdet_logit - log_q
              + base.discrete_log_prob_offset(x[0].size, model.num_levels))
  np.testing.assert_allclose(log_prob, expected, rtol=1e-5)
  if model.dequantization == 'uniform':
    np.testing.assert_array_equal(log_q, 0.0)


@pytest.mark.parametrize('name', ['nice', 'realnvp-batchnorm'])
def test_loss_falls_and_samples_are_valid_levels(name):
  model = MODELS[name]()
  if isinstance(model, RealNVP):
    model = model.clone(event_shape=(4, 4, 1), num_blocks=0)
  x = _digits(64)
  variables = _init(model, x[:16], perturb=0.0)

  def loss(params, rng):
    log_prob, _ = model.apply({**variables, 'params': params}, x, train=True, method='log_prob',
                              rngs={'dequantize': rng}, mutable=['batch_stats'])
    return -log_prob.mean() / x[0].size

  params, losses = helpers.fit_adam(loss, variables['params'], jax.random.PRNGKey(0),
                                    num_steps=30, learning_rate=3e-3)
  assert losses[-5:].mean() < losses[:5].mean() - 0.1, losses  # nats/dim
  variables = {**variables, 'params': params}
  inverse = jax.jit(lambda z: model.apply(variables, z, method=lambda m, z: m.flow.inverse(z))[0])
  for temperature in (1.0, 0.7):
    samples = sampling.sample(model, variables, jax.random.PRNGKey(1), 8, temperature=temperature)
    chex.assert_shape(samples, (8, *model.event_shape))
    assert samples.dtype == jnp.int32
    assert samples.min() >= 0 and samples.max() < model.num_levels
    # The continuous inverse itself stays finite (the levels are clipped, w is not).
    z = temperature * jax.random.normal(jax.random.PRNGKey(2), (8, *model.event_shape))
    chex.assert_tree_all_finite(inverse(z))


def test_class_conditional_realnvp():
  model = MODELS['realnvp-actnorm-variational'](num_classes=3)
  x = _levels(model, 4)
  y = jnp.array([0, 1, 2, 0])
  variables = _init(model, x, y, perturb=0.3)
  rngs = {'dequantize': jax.random.PRNGKey(0)}
  log_prob = jax.jit(lambda x, y: model.apply(variables, x, y, rngs=rngs, method='log_prob'))
  # Same images, same dequantization noise: only the class prior differs.
  by_class = [log_prob(x, jnp.full([4], c)) for c in range(3)]
  chex.assert_tree_all_finite(by_class)
  assert np.abs(by_class[0] - by_class[1]).min() > 1e-3
  samples = sampling.sample(model, variables, jax.random.PRNGKey(1), 4, y=y, temperature=0.7)
  chex.assert_shape(samples, (4, 4, 4, 1))
  with pytest.raises(ValueError, match='class-conditional'):
    model.apply(variables, x, rngs=rngs, method='log_prob')


def test_bfloat16_compute_keeps_float32_params_and_log_prob():
  model = MODELS['realnvp-batchnorm'](dtype=jnp.bfloat16, num_scales=1)
  x = _levels(model, 4)
  variables = _init(model, x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  rngs = {'dequantize': jax.random.PRNGKey(0)}
  log_prob_fn = lambda m: jax.jit(lambda v: m.apply(v, x, rngs=rngs, method='log_prob'))(variables)
  log_prob = log_prob_fn(model)
  assert log_prob.dtype == jnp.float32
  # 32 dims of ~3 nats; bf16 networks keep ~3 significant digits of shifts and scales.
  np.testing.assert_allclose(log_prob, log_prob_fn(model.clone(dtype=jnp.float32)), rtol=0.02)


def test_build_options():
  info = helpers.dataset_info((8, 8, 1), 17, 10)
  nice = build_model('nice', info, {'hidden_sizes': [32, 32], 'prior': 'normal'})
  assert isinstance(nice, NICE) and nice.hidden_sizes == (32, 32) and nice.prior == 'normal'
  realnvp = build_model('realnvp', info, {'num_scales': 3, 'conditional': True, 'norm': 'act',
                                          'dequantization': 'variational'})
  assert isinstance(realnvp, RealNVP)
  assert (realnvp.num_scales, realnvp.num_classes, realnvp.norm) == (3, 10, 'act')
  assert realnvp.dequantization == 'variational' and realnvp.event_shape == (8, 8, 1)


@pytest.mark.parametrize('name,options,match', [
    ('nice', {'num_couplings': 1}, 'num_couplings'),
    ('nice', {'hidden_sizes': [0]}, 'hidden_sizes'),
    ('nice', {'prior': 'cauchy'}, 'prior'),
    ('nice', {'alpha': 0.5}, 'alpha'),
    ('nice', {'conditional': True}, 'unknown option'),
    ('realnvp', {'num_scales': 4}, 'divisible by 8'),
    ('realnvp', {'num_scales': 0}, 'num_scales'),
    ('realnvp', {'norm': 'layer'}, 'norm'),
    ('realnvp', {'hidden': 0}, 'hidden'),
    ('realnvp', {'num_blocks': -1}, 'num_blocks'),
    ('realnvp', {'dequantization': 'gaussian'}, 'dequantization'),
    ('realnvp', {'conditional': True}, 'labels'),
])
def test_build_refuses(name, options, match):
  with pytest.raises(ConfigError, match=match) as error:
    build_model(name, helpers.dataset_info((4, 4, 1), 17), options)
  assert '\n' not in str(error.value)


@pytest.mark.parametrize('shape,num_levels,match', [((16,), 17, 'images'), ((4, 4, 1), None, '--quantize')])
def test_build_refuses_data_it_cannot_model(shape, num_levels, match):
  for name in ('nice', 'realnvp'):
    with pytest.raises(ConfigError, match=match):
      build_model(name, helpers.dataset_info(shape, num_levels), {})


@pytest.mark.parametrize('script,flags', [
    ('nice', ['--hidden_sizes=16']),
    ('realnvp', ['--hidden=8', '--num_blocks=0', '--num_scales=2']),
])
def test_experiment_script_trains_on_digits(script, flags, tmp_path):
  command = [sys.executable, os.path.join(REPO, 'experiments', f'{script}.py'),
             f'--flagfile={os.path.join(REPO, "experiments", "configs", f"{script}_digits.flags")}',
             *flags, '--num_steps=2', '--eval_every=0', '--checkpoint_every=0', '--num_samples=4',
             '--eval_split=train[1500:1564]', f'--workdir={tmp_path / script}']
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out['step'] == 2 and np.isfinite(out['bits_per_dim'])
