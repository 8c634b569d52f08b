"""ImageFlow, the model NICE, RealNVP, Glow and Flow++ share, on a flow known in closed form.

With an elementwise affine flow z = exp(a) w + b, a given dequantization offset and a
(class-shifted) normal or logistic prior, every term of `log_prob` has a closed form:
the discrete probabilities summed over all levels are the prior mass of the interval
the logit preprocessing maps [0, 1] to, and sampling draws the interior levels with
exactly those probabilities.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dulx.data import DatasetInfo
from dulx.errors import ConfigError
from dulx.models.flows.image_flow import (ImageFlow, image_flow_fields, require_alpha,
                                          require_squeezable)

ALPHA = 0.05
LEVELS = 4
LOG_A, B = -0.8, -0.3


class _Affine(nn.Module):
  """z = exp(log_a) w + b elementwise."""

  def setup(self):
    self.log_a = self.param('log_a', nn.initializers.zeros, ())
    self.b = self.param('b', nn.initializers.zeros, ())

  def _logdet(self, w):
    return jnp.full(w.shape[0], self.log_a * math.prod(w.shape[1:]))

  def forward(self, w, context=None, *, train=False):
    return w * jnp.exp(self.log_a) + self.b, self._logdet(w)

  def inverse(self, z, context=None, *, train=False):
    return (z - self.b) * jnp.exp(-self.log_a), -self._logdet(z)


class _GivenOffset(nn.Module):
  """A dequantizer whose input is already level + u (float): v = x / L, log q = 0."""
  num_levels: int

  def __call__(self, x):
    return x.astype(jnp.float32) / self.num_levels, jnp.zeros(x.shape[0], jnp.float32)


class _AffineImageFlow(ImageFlow):

  def make_flow(self):
    return _Affine()

  def make_dequantizer(self):
    return _GivenOffset(self.num_levels)


def _model(event_shape, prior, num_classes=None):
  model = _AffineImageFlow(event_shape=event_shape, num_levels=LEVELS, alpha=ALPHA,
                           prior=prior, num_classes=num_classes)
  y = None if num_classes is None else jnp.zeros(1, jnp.int32)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *event_shape)), y)['params']
  params = jax.tree_util.tree_map(np.asarray, params)
  params['flow'] = {'log_a': np.float32(LOG_A), 'b': np.float32(B)}
  if num_classes is not None:
    embedding = params['class_prior']['embedding']
    params['class_prior']['embedding'] = 0.5 * np.random.default_rng(0).standard_normal(
        embedding.shape).astype(np.float32)
  return model, {'params': params}


def _cdf(prior, z):
  return jax.nn.sigmoid(z) if prior == 'logistic' else jax.scipy.stats.norm.cdf(z)


def _prior_mass(prior, v_lo, v_hi, shift, log_scale, temperature=1.0):
  """P(v in [v_lo, v_hi)) per dimension, for v the flow's image of z = shift + exp(log_scale) T z0."""
  def z0(v):
    s = ALPHA + (1 - 2 * ALPHA) * v
    z = math.exp(LOG_A) * (math.log(s) - math.log1p(-s)) + B
    return (z - shift) / (np.exp(log_scale) * temperature)
  return np.asarray(_cdf(prior, z0(v_hi)) - _cdf(prior, z0(v_lo)), np.float64)


@pytest.mark.parametrize('prior', ['normal', 'logistic'])
@pytest.mark.parametrize('num_classes', [None, 3], ids=['unconditional', 'conditional'])
def test_discrete_probabilities_sum_to_the_prior_mass_of_the_logit_interval(prior, num_classes):
  # P(x) = E_u exp(log_prob(x + u)) by the midpoint rule over u, on a 1x2x1 image:
  # summed over all L^2 images it is the prior mass of the box f(logit([alpha, 1 - alpha]))^2.
  # It checks every term: the flow's, the logit's and the class prior's Jacobians and -D log L.
  model, variables = _model((1, 2, 1), prior, num_classes)
  per_level = 100
  grid = (np.arange(LEVELS * per_level) + 0.5) / per_level  # level + u, u at bin midpoints
  v1, v2 = np.meshgrid(grid, grid, indexing='ij')
  x = np.stack([v1.ravel(), v2.ravel()], -1).reshape(-1, 1, 2, 1).astype(np.float32)
  y = None if num_classes is None else jnp.full(len(x), 1, jnp.int32)
  log_p = jax.jit(lambda x, y: model.apply(variables, x, y, method='log_prob'))(x, y)
  total = np.exp(np.asarray(log_p, np.float64)).sum() / per_level**2

  if num_classes is None:
    shift, log_scale = np.zeros(2), np.zeros(2)
  else:
    shift, log_scale = np.split(variables['params']['class_prior']['embedding'][1], 2)
  expected = np.prod(_prior_mass(prior, 0.0, 1.0, shift, log_scale))
  assert 0.1 < expected < 0.99, 'the test needs mass both inside and outside the interval'
  np.testing.assert_allclose(total, expected, rtol=1e-4)


@pytest.mark.parametrize('temperature', [1.0, 0.7])
@pytest.mark.parametrize('num_classes', [None, 3], ids=['unconditional', 'conditional'])
def test_samples_draw_the_interior_levels_with_their_probabilities(temperature, num_classes):
  # Mass outside [0, 1) clips to the edge levels; the interior levels 1 and 2 keep P(x)
  # at the temperature's prior (z0 scaled by T).
  model, variables = _model((1, 1, 1), 'normal', num_classes)
  n = 40_000
  y = None if num_classes is None else jnp.full(n, 2, jnp.int32)
  samples = np.asarray(model.apply(variables, jax.random.PRNGKey(1), n, y, temperature,
                                   method='sample'))
  assert samples.shape == (n, 1, 1, 1) and samples.dtype == np.int32
  assert samples.min() >= 0 and samples.max() < LEVELS
  if num_classes is None:
    shift, log_scale = 0.0, 0.0
  else:
    shift, log_scale = variables['params']['class_prior']['embedding'][2]
  for level in (1, 2):
    p = float(_prior_mass('normal', level / LEVELS, (level + 1) / LEVELS, shift, log_scale,
                          temperature))
    frequency = np.mean(samples == level)
    assert abs(frequency - p) < 5 * math.sqrt(p * (1 - p) / n), (level, frequency, p)


def test_bad_prior_and_missing_labels_raise():
  with pytest.raises(ValueError, match='unknown prior'):
    _model((1, 1, 1), 'cauchy')
  model, variables = _model((1, 1, 1), 'normal', num_classes=3)
  with pytest.raises(ValueError, match='pass labels y'):
    model.apply(variables, jnp.zeros((2, 1, 1, 1)), method='log_prob')


def test_builder_checks_raise_one_config_error():
  for alpha in (0, 0.5, -0.1, True, '0.1'):
    with pytest.raises(ConfigError, match='--alpha'):
      require_alpha(alpha)
  assert require_alpha(0.05) == 0.05
  require_squeezable((8, 8, 1), 3, 'num_scales')
  with pytest.raises(ConfigError, match='divisible by 4'):
    require_squeezable((6, 8, 1), 2, 'num_scales')
  info = DatasetInfo(spec='toy2d:two_moons', split='train', shape=(2,), num_levels=None,
                     num_classes=None)
  with pytest.raises(ConfigError, match='models images'):
    image_flow_fields(info, 'glow', 'uniform', 32, 0.05)
  info = DatasetInfo(spec='digits', split='train', shape=(8, 8, 1), num_levels=17, num_classes=10)
  fields = image_flow_fields(info, 'glow', 'variational', 16, 0.1)
  assert fields == dict(event_shape=(8, 8, 1), num_levels=17, dequantization='variational',
                        dequantization_hidden=16, alpha=0.1)
