"""Glow (dulx.models.flows.glow): invertibility, every Jacobian counted, actnorm's
data-dependent init through the model, learning, temperature sampling, class
conditioning, variational dequantization (dulx.models.flows.dequantization), builder
errors, the experiment script.

Tolerances as in test_flow_layers.py: float32 round trips agree to ~1e-4.
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

from dulx import sampling
from dulx.errors import ConfigError
from dulx.models import build_model
from dulx.models.flows import base
from dulx.models.flows.glow import Glow
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _glow(**fields):
  return Glow(**{'event_shape': (4, 4, 1), 'num_levels': 17, 'num_scales': 2, 'steps_per_scale': 2,
                 'hidden': 8, **fields})


def _levels(model, num, seed=0):
  shape = (num, *model.event_shape)
  return jnp.asarray(np.random.default_rng(seed).integers(0, model.num_levels, shape), jnp.int32)


def _init(model, x, y=None, perturb=0.1):
  rngs = {'params': jax.random.PRNGKey(0), 'dequantize': jax.random.PRNGKey(1)}
  variables = jax.jit(model.init)(rngs, x, y)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda p: p + perturb * rng.standard_normal(p.shape).astype(p.dtype),
                        variables['params'])
  return {**variables, 'params': params}


@pytest.mark.parametrize('fields', [{}, {'learned_prior': False, 'remat': True, 'event_shape': (4, 4, 3)}],
                         ids=['learned-prior', 'plain-prior-remat-rgb'])
def test_flow_inverts_and_logdet_is_log_abs_det_jacobian(fields):
  model = _glow(**fields)
  x = _levels(model, 3)
  variables = _init(model, x)
  w = jax.random.normal(jax.random.PRNGKey(3), x.shape)

  @jax.jit
  def round_trip(w):
    def fn(m, w):
      z, logdet = m.flow.forward(w)
      w_back, logdet_back = m.flow.inverse(z)
      return z, logdet, w_back, logdet_back
    return model.apply(variables, w, method=fn)

  z, logdet, w_back, logdet_back = round_trip(w)
  chex.assert_shape(z, w.shape)
  np.testing.assert_allclose(w_back, w, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(logdet + logdet_back, 0.0, atol=1e-3)
  jacobian = jax.jit(jax.jacfwd(lambda w0: model.apply(
      variables, w0.reshape(1, *model.event_shape), method=lambda m, w: m.flow.forward(w)[0]
  ).reshape(-1)))(w[0].reshape(-1))
  sign, log_det = np.linalg.slogdet(np.asarray(jacobian, np.float64))
  assert sign != 0
  np.testing.assert_allclose(logdet[0], log_det, rtol=1e-4, atol=1e-3)


def test_init_normalises_the_first_actnorm_on_the_init_batch():
  model = _glow()
  x = _levels(model, 16)
  variables = jax.jit(model.init)({'params': jax.random.PRNGKey(0),
                                   'dequantize': jax.random.PRNGKey(1)}, x)
  # The first actnorm of the first scale sees squeeze(logit(dequantize(x))); its
  # parameters (step 0 of the scan) must whiten that batch per channel.
  def flow_input(m, x):
    v, _ = m.dequantizer(x)
    w, _ = base.logit_preprocess(v, m.alpha)
    return w
  w = model.apply(variables, x, method=flow_input,
                  rngs={'dequantize': jax.random.PRNGKey(1)})
  h = w.reshape(16, 2, 2, 2, 2, 1).transpose(0, 1, 3, 2, 4, 5).reshape(16, 2, 2, 4)
  actnorm = variables['params']['flow']['layers_1']['layer']['norm']
  z = (h + actnorm['bias'][0]) * jnp.exp(actnorm['log_scale'][0])
  np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
  np.testing.assert_allclose(z.std(axis=(0, 1, 2)), 1.0, atol=1e-3)


def test_loss_falls_and_temperature_samples_are_valid_levels():
  model = _glow(num_classes=2)
  x = _levels(model, 32) // 4 * 4  # A few levels only: there is something to learn fast.
  y = jnp.arange(32) % 2
  variables = _init(model, x, y, perturb=0.0)

  def loss(params, rng):
    log_prob = model.apply({'params': params}, x, y, method='log_prob', rngs={'dequantize': rng})
    return -log_prob.mean() / x[0].size

  params, losses = helpers.fit_adam(loss, variables['params'], jax.random.PRNGKey(0),
                                    num_steps=30, learning_rate=3e-3)
  assert losses[-5:].mean() < losses[:5].mean() - 0.1, losses  # nats/dim
  variables = {'params': params}
  inverse = jax.jit(lambda z: model.apply(variables, z, method=lambda m, z: m.flow.inverse(z))[0])
  for temperature in (1.0, 0.7):
    samples = sampling.sample(model, variables, jax.random.PRNGKey(1), 6, y=y[:6],
                              temperature=temperature)
    chex.assert_shape(samples, (6, 4, 4, 1))
    assert samples.dtype == jnp.int32
    assert samples.min() >= 0 and samples.max() < model.num_levels
    z = temperature * jax.random.normal(jax.random.PRNGKey(2), (6, 4, 4, 1))
    chex.assert_tree_all_finite(inverse(z))
  with pytest.raises(ValueError, match='class-conditional'):
    model.apply(variables, x, method='log_prob', rngs={'dequantize': jax.random.PRNGKey(0)})


def test_variational_dequantization_bound_decomposes():
  """Glow with --dequantization=variational: log_prob = log p(v) - D log L - log q(u | x)."""
  model = _glow(dequantization='variational', dequantization_hidden=4)
  x = _levels(model, 4)
  variables = _init(model, x, perturb=0.2)
  rngs = {'dequantize': jax.random.PRNGKey(2)}

  @jax.jit
  def run(variables):
    def parts(m, x):
      v, log_q = m.dequantizer(x)
      w, logdet_logit = base.logit_preprocess(v, m.alpha)
      z, logdet_flow = m.flow.forward(w)
      return v, log_q, base.standard_normal_log_prob(z) + logdet_flow + logdet_logit
    return (model.apply(variables, x, rngs=rngs, method='log_prob'),
            model.apply(variables, x, rngs=rngs, method=parts))

  log_prob, (v, log_q, log_pv) = run(variables)
  assert set(variables['params']['dequantizer']) == {'context_convs_0', 'context_convs_1', 'flow'}
  np.testing.assert_array_equal(base.levels_from_unit(v, 17), x)
  assert np.all(np.abs(log_q) > 0)
  np.testing.assert_allclose(log_prob, log_pv - log_q + base.discrete_log_prob_offset(16, 17),
                             rtol=1e-5)


def test_build_options():
  info = helpers.dataset_info((28, 28, 1), 256, 10)
  glow = build_model('glow', info, {'num_scales': 2, 'steps_per_scale': 3, 'remat': True,
                                    'conditional': True, 'dequantization': 'variational'})
  assert isinstance(glow, Glow)
  assert (glow.num_scales, glow.steps_per_scale, glow.remat, glow.num_classes) == (2, 3, True, 10)
  assert glow.event_shape == (28, 28, 1) and glow.num_levels == 256


@pytest.mark.parametrize('options,match', [
    ({'num_scales': 3}, 'divisible by 8'),
    ({'num_scales': 0}, 'num_scales'),
    ({'steps_per_scale': 0}, 'steps_per_scale'),
    ({'hidden': -1}, 'hidden'),
    ({'learned_prior': 'yes'}, 'learned_prior'),
    ({'remat': 1}, 'remat'),
    ({'conditional': True}, 'labels'),
    ({'dequantization': 'none'}, 'dequantization'),
    ({'dequantization_hidden': 0}, 'dequantization_hidden'),
    ({'alpha': 0.0}, 'alpha'),
    ({'norm': 'batch'}, 'unknown option'),
])
def test_build_refuses(options, match):
  with pytest.raises(ConfigError, match=match) as error:
    build_model('glow', helpers.dataset_info((4, 4, 1), 17), options)
  assert '\n' not in str(error.value)


def test_experiment_script_trains_on_digits(tmp_path):
  command = [sys.executable, os.path.join(REPO, 'experiments', 'glow.py'),
             f'--flagfile={os.path.join(REPO, "experiments", "configs", "glow_digits.flags")}',
             '--hidden=8', '--steps_per_scale=1', '--num_steps=2', '--eval_every=0',
             '--checkpoint_every=0', '--num_samples=4', '--eval_split=train[1500:1564]',
             f'--workdir={tmp_path / "glow"}']
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out['step'] == 2 and np.isfinite(out['bits_per_dim'])
