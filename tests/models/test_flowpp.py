"""Flow++ (dulx.models.flows.flowpp): the mixture-logistic coupling's invertibility and
logdet, its identity initialisation and untouched kept entries, the whole flow's
Jacobian, the variational dequantizer's log q, learning, temperature sampling, class
conditioning, builder errors, the experiment script.

Tolerances: the forward map is closed-form float32 (a few ulps per exp/log/logsumexp on
O(1)-O(10) values), and the inverse is 40 halvings of a bracket O(100) wide, which
reach float32's spacing; a round trip then agrees to ~1e-4 absolute, limited by the
logit of the mixture CDF where its slope is small (between separated components an
error of one ulp in logit space moves x by ulp / slope). Logdets sum a few dozen O(1)
terms, so forward and inverse cancel to ~1e-4 relative to their size, and match slogdet
of the float32 jacfwd Jacobian (taken in float64) to ~1e-4 relative. At initialisation
logit(sigmoid(x)) is computed through logsumexp of K equal terms, exact to ~1e-6.
"""

import functools
import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dulx import data
from dulx.errors import ConfigError
from dulx.models import build_model
from dulx.models.flows import base
from dulx.models.flows.flowpp import AttentionNet, FlowPP, FlowppDequantizer
from dulx.models.flows.flowpp import MixtureLogisticCoupling
from dulx.models.flows.layers import checkerboard
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = {'hidden': 8, 'num_blocks': 1, 'num_heads': 2, 'num_components': 3}
# Parameters are drawn with 'rbg' keys: XLA:CPU compiles each threefry draw of an
# initialiser slowly (~0.5 s), and the values are arbitrary here anyway.
PARAMS_KEY = jax.random.key(0, impl='rbg')


def _perturb(variables, seed=0, scale=0.1):
  """Adds N(0, scale^2) to every parameter, so the zero-initialised output layer is not zero."""
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda p: p + scale * rng.standard_normal(p.shape).astype(p.dtype),
                        variables['params'])
  return {**variables, 'params': params}


# name -> (mask, parity, input shape, uses context, jit). Compiled and eager execution
# each cover both masks; the Jacobian check runs in the compiled cases.
COUPLING_CASES = {
    'checkerboard-0-jit': ('checkerboard', 0, (2, 4, 4, 2), False, True),
    'checkerboard-1-context-eager': ('checkerboard', 1, (2, 4, 6, 1), True, False),
    'channel-0-eager': ('channel', 0, (2, 4, 4, 4), False, False),
    'channel-1-odd-context-jit': ('channel', 1, (2, 2, 2, 3), True, True),
}


def _kept(mask, parity, x):
  """The entries of x [B, H, W, C] that a coupling keeps."""
  if mask == 'checkerboard':
    return x[np.broadcast_to(checkerboard(x.shape, parity), x.shape) > 0]
  k = x.shape[-1] // 2
  return x[..., :k] if parity == 0 else x[..., k:]


@pytest.mark.parametrize('case', COUPLING_CASES)
def test_coupling_starts_as_identity_inverts_and_keeps_its_kept_entries(case):
  mask, parity, shape, uses_context, jit = COUPLING_CASES[case]
  net = AttentionNet(TINY['hidden'], TINY['num_blocks'], TINY['num_heads'])
  flow = MixtureLogisticCoupling(net, mask=mask, parity=parity,
                                 num_components=TINY['num_components'])
  x = 2.0 * jax.random.normal(jax.random.PRNGKey(0), shape) + 0.5
  context = jax.random.normal(jax.random.PRNGKey(1), (*shape[:-1], 3)) if uses_context else None
  fresh = jax.jit(functools.partial(flow.init, method='forward'))(PARAMS_KEY, x, context)

  # Zero network outputs: K identical standard logistics, logit(sigmoid(x)) = x.
  z, logdet = flow.apply(fresh, x, context, method='forward')
  np.testing.assert_allclose(z, x, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(logdet, 0.0, atol=1e-4)

  variables = _perturb(fresh)
  x0, c0 = x[:1], None if context is None else context[:1]

  def run(variables, x, context):
    z, logdet = flow.apply(variables, x, context, method='forward')
    x_back, logdet_back = flow.apply(variables, z, context, method='inverse')
    if not jit:
      return z, logdet, x_back, logdet_back, None
    forward_flat = lambda t: flow.apply(variables, t.reshape(x0.shape), c0, method='forward')[0]
    jacobian = jax.jacfwd(lambda t: forward_flat(t).reshape(-1))(x0.reshape(-1))
    return z, logdet, x_back, logdet_back, jacobian

  z, logdet, x_back, logdet_back, jacobian = (jax.jit(run) if jit else run)(variables, x, context)
  chex.assert_shape([z, x_back], x.shape)
  chex.assert_shape([logdet, logdet_back], x.shape[:1])
  np.testing.assert_allclose(x_back, x, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(logdet + logdet_back, 0.0, atol=1e-4 * (1 + np.abs(logdet).max()))
  np.testing.assert_array_equal(_kept(mask, parity, z), _kept(mask, parity, x))
  assert not np.allclose(z, x, atol=1e-2)  # The perturbed coupling does transform.
  if jit:
    sign, expected = np.linalg.slogdet(np.asarray(jacobian, np.float64))
    assert sign != 0
    np.testing.assert_allclose(logdet[0], expected, rtol=1e-4, atol=1e-4)


def test_attention_net_drops_out_only_in_training():
  net = AttentionNet(4, num_blocks=1, num_heads=2, dropout=0.5)
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 2, 2, 1))

  @jax.jit
  def run(key):
    variables = _perturb(net.init(key, x, 3))  # Non-zero output layer.
    training = [net.apply(variables, x, 3, train=True, rngs={'dropout': jax.random.PRNGKey(seed)})
                for seed in (0, 1)]
    return net.apply(variables, x, 3), net.clone(dropout=0.0).apply(variables, x, 3), training

  evaluation, without_dropout, training = run(PARAMS_KEY)
  np.testing.assert_array_equal(evaluation, without_dropout)
  assert not np.allclose(training[0], evaluation) and not np.allclose(*training)


def _flowpp(**fields):
  return FlowPP(**{'event_shape': (4, 4, 2), 'num_levels': 17, 'num_checkerboard': 1,
                   'num_channel': 1, 'num_checkerboard_squeezed': 1, **TINY, 'num_blocks': 0,
                   **fields})


def test_flow_inverts_and_logdet_is_log_abs_det_jacobian():
  model = _flowpp()
  variables = helpers.random_variables(model, scale=0.1)  # Random actnorm, 1x1 convs, couplings.
  w = jax.random.normal(jax.random.PRNGKey(3), (3, *model.event_shape))

  @jax.jit
  def run(w):
    forward = lambda w: model.apply(variables, w, method=lambda m, w: m.flow.forward(w))
    z, logdet = forward(w)
    w_back, logdet_back = model.apply(variables, z, method=lambda m, z: m.flow.inverse(z))
    flat = lambda t: forward(t.reshape(1, *w.shape[1:]))[0].reshape(-1)
    return z, logdet, w_back, logdet_back, jax.jacfwd(flat)(w[0].reshape(-1))

  z, logdet, w_back, logdet_back, jacobian = run(w)
  chex.assert_shape(z, w.shape)
  np.testing.assert_allclose(w_back, w, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(logdet + logdet_back, 0.0, atol=1e-4 * (1 + np.abs(logdet).max()))
  sign, expected = np.linalg.slogdet(np.asarray(jacobian, np.float64))
  assert sign != 0
  np.testing.assert_allclose(logdet[0], expected, rtol=1e-4, atol=1e-3)


def test_variational_dequantizer_stays_in_its_cell_and_log_q_is_the_density_of_its_noise():
  """v in [x/L, (x+1)/L) and log q(u | x) = log N(eps) - log |det du/deps| (by jacfwd)."""
  num_levels = 5
  deq = FlowppDequantizer(num_levels, hidden=8, num_couplings=2, num_blocks=0, num_heads=2,
                          num_components=3)
  x = jnp.asarray(np.random.default_rng(0).integers(0, num_levels, (2, 2, 4, 1)), jnp.int32)
  eps = 2.0 * jax.random.normal(jax.random.PRNGKey(2), x.shape)
  init = jax.jit(functools.partial(deq.init, method='from_noise'))
  # Scale 0.2 drives u up to ~0.9999; much further, x + u rounds up to x + 1 in float32
  # (the shared VariationalDequantizer clips u only below 1, not x + u below x + 1).
  variables = _perturb(init(PARAMS_KEY, x, eps), scale=0.2)

  @jax.jit
  def run(eps):
    dequantize = lambda e: deq.apply(variables, x, e, method='from_noise')
    u_of_eps = lambda e: num_levels * dequantize(e.reshape(x.shape))[0][0].reshape(-1)
    return dequantize(eps), jax.jacfwd(u_of_eps)(eps.reshape(-1))[:, :8]  # du_0 / deps_0.

  (v, log_q), jacobian = run(eps)
  assert np.all(v >= x / num_levels) and np.all(v < (x + 1) / num_levels)
  np.testing.assert_array_equal(base.levels_from_unit(v, num_levels), x)
  _, log_det = np.linalg.slogdet(np.asarray(jacobian, np.float64))
  expected = float(base.standard_normal_log_prob(eps[:1])[0]) - log_det
  np.testing.assert_allclose(log_q[0], expected, rtol=1e-4)


def test_loss_falls_on_digits_samples_are_valid_levels_and_labels_matter():
  ds = data.load('digits', 'train[:64]')
  x, y = jnp.asarray(ds.x[:, 2:6, 2:6]), jnp.asarray(ds.y)  # The central 4x4 pixels.
  model = _flowpp(event_shape=(4, 4, 1), num_classes=10, num_channel=0, num_checkerboard_squeezed=0,
                  dequantization='variational', dequantization_hidden=8,
                  dequantization_couplings=1)
  rngs = {'params': PARAMS_KEY, 'dequantize': jax.random.PRNGKey(1)}
  variables = jax.jit(model.init)(rngs, x, y)
  assert {'dequantizer', 'flow', 'class_prior'} <= set(variables['params'])

  def loss(params, rng):
    log_prob = model.apply({'params': params}, x, y, train=True, method='log_prob',
                           rngs={'dequantize': rng})
    return -log_prob.mean() / x[0].size

  params, losses = helpers.fit_adam(loss, variables['params'], jax.random.PRNGKey(0),
                                    num_steps=25, learning_rate=5e-3)
  assert losses[-5:].mean() < losses[:5].mean() - 0.1, losses  # nats/dim
  variables = {'params': params}

  @jax.jit
  def evaluate(temperature):
    """Samples, the continuous flow outputs they come from, and log p(x | y), log p(x | y + 1)."""
    def fn(m):
      samples = m.sample(jax.random.PRNGKey(1), 8, y[:8], temperature)
      w, _ = m.flow.inverse(temperature * jax.random.normal(jax.random.PRNGKey(2), (8, 4, 4, 1)))
      return samples, w
    samples, w = model.apply(variables, method=fn)
    # The same 'dequantize' key, so the same noise: only the labels differ.
    log_p = [model.apply(variables, x[:4], labels, method='log_prob',
                         rngs={'dequantize': jax.random.PRNGKey(3)})
             for labels in (y[:4], (y[:4] + 1) % 10)]
    return samples, w, log_p

  for temperature in (1.0, 0.7):
    samples, w, (log_p, log_p_other_label) = evaluate(temperature)
    chex.assert_shape(samples, (8, 4, 4, 1))
    assert samples.dtype == jnp.int32
    assert samples.min() >= 0 and samples.max() < model.num_levels
    chex.assert_tree_all_finite(w)
  assert np.all(np.abs(log_p - log_p_other_label) > 1e-3), (log_p, log_p_other_label)
  with pytest.raises(ValueError, match='class-conditional'):
    jax.eval_shape(lambda: model.apply(variables, x, method='log_prob',
                                       rngs={'dequantize': jax.random.PRNGKey(0)}))


def test_build_options():
  info = helpers.dataset_info((28, 28, 1), 256, 10)
  model = build_model('flowpp', info, {'num_checkerboard': 3, 'num_components': 32, 'hidden': 64,
                                       'dropout': 0.2, 'conditional': True,
                                       'dequantization': 'uniform'})
  assert isinstance(model, FlowPP)
  assert (model.num_checkerboard, model.num_components, model.hidden, model.dropout,
          model.num_classes, model.dequantization) == (3, 32, 64, 0.2, 10, 'uniform')
  assert model.event_shape == (28, 28, 1) and model.num_levels == 256
  assert build_model('flowpp', info, {}).dequantization == 'variational'  # The paper's.
  # Only a variational dequantizer's features split into heads.
  assert build_model('flowpp', info, {'num_heads': 3, 'hidden': 48, 'dequantization': 'uniform'})


@pytest.mark.parametrize('shape,options,match', [
    ((7, 8, 1), {}, 'divisible by 2'),
    ((4, 4, 1), {'num_checkerboard': -1}, 'num_checkerboard'),
    ((4, 4, 1), {'num_checkerboard': 0, 'num_channel': 0, 'num_checkerboard_squeezed': 0},
     'at least one coupling'),
    ((4, 4, 1), {'hidden': 0}, 'hidden'),
    ((4, 4, 1), {'hidden': 30}, 'multiple of --num_heads'),
    ((4, 4, 1), {'dequantization_hidden': 6}, 'dequantization_hidden'),
    ((4, 4, 1), {'num_heads': 0}, 'num_heads'),
    ((4, 4, 1), {'num_blocks': -1}, 'num_blocks'),
    ((4, 4, 1), {'dequantization_couplings': 0}, 'dequantization_couplings'),
    ((4, 4, 1), {'num_components': 0}, 'num_components'),
    ((4, 4, 1), {'dropout': 1.0}, 'dropout'),
    ((4, 4, 1), {'dropout': True}, 'dropout'),
    ((4, 4, 1), {'conditional': True}, 'labels'),
    ((4, 4, 1), {'dequantization': 'none'}, 'dequantization'),
    ((4, 4, 1), {'alpha': 0.5}, 'alpha'),
    ((4, 4, 1), {'num_scales': 2}, 'unknown option'),
])
def test_build_refuses(shape, options, match):
  with pytest.raises(ConfigError, match=match) as error:
    build_model('flowpp', helpers.dataset_info(shape, 17), options)
  assert '\n' not in str(error.value)


# The digits flagfile with a one-coupling model and two steps: the script's whole path
# (flags, data, init, train, eval, samples) in a few compilations.
TINY_SCRIPT_FLAGS = {
    'hidden': 8, 'num_heads': 2, 'num_blocks': 0, 'num_components': 3, 'num_checkerboard': 1,
    'num_channel': 0, 'num_checkerboard_squeezed': 0, 'dequantization_hidden': 8,
    'dequantization_couplings': 1, 'num_steps': 2, 'eval_every': 0, 'checkpoint_every': 0,
    'num_samples': 4, 'eval_split': 'train[1500:1564]',
}


def test_experiment_script_trains_on_digits(tmp_path):
  flagfile = os.path.join(REPO, 'experiments', 'configs', 'flowpp_digits.flags')
  # The flagfile first: absl lets the flags after it override it.
  flags = [f'--{name}={value}' for name, value in
           {'flagfile': flagfile, **TINY_SCRIPT_FLAGS, 'workdir': tmp_path / 'flowpp'}.items()]
  script = os.path.join(REPO, 'experiments', 'flowpp.py')
  result = subprocess.run([sys.executable, script, *flags], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  last = json.loads(result.stdout.strip().splitlines()[-1])
  assert last['step'] == 2 and np.isfinite(last['bits_per_dim']), last
