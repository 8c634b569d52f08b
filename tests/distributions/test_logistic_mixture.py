"""Discretized logistic mixture: normalisation, quadrature, sampling, layout, gradients."""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from dulx.distributions import logistic_mixture
from tests import helpers


def _pack(logits, means, log_scales, coupling):
  """Raw parameters [N, P] in the documented layout from [N, K], [N, C, K] x 2, [N, C(C-1)/2, K]."""
  n = logits.shape[0]
  return np.concatenate([logits, means.reshape(n, -1), log_scales.reshape(n, -1),
                         coupling.reshape(n, -1)], axis=-1).astype(np.float32)


def _random_params(rng, n, num_channels, num_components):
  """[n, P] mixtures over the regimes that matter: widths from the clip at -7 (a bin
  ~100 scales wide) to e^3, means inside and well outside [-1, 1], strong couplings."""
  c, k = num_channels, num_components
  return _pack(rng.normal(0, 2, (n, k)), rng.uniform(-2, 2, (n, c, k)),
               rng.uniform(-8, 3, (n, c, k)), rng.normal(0, 2, (n, c * (c - 1) // 2, k)))


_log_prob = jax.jit(logistic_mixture.log_prob, static_argnums=2)
_sample = jax.jit(logistic_mixture.sample, static_argnames=('num_channels', 'num_levels'))


def _all_levels(num_levels, num_channels):
  return np.array(list(itertools.product(range(num_levels), repeat=num_channels)), np.int32)


@functools.partial(jax.jit, static_argnums=2)
def _log_probs_all(params, points, num_levels):
  """[N, L^C] log P(point) for each mixture (rows of params [N, P]) and every point [L^C, C]."""
  return jax.vmap(lambda p: logistic_mixture.log_prob(
      jnp.broadcast_to(p, (points.shape[0], p.shape[0])), points, num_levels))(params)


@pytest.mark.parametrize('num_levels,num_channels', [(256, 1), (17, 1), (2, 1), (5, 3)])
def test_probabilities_sum_to_one(num_levels, num_channels):
  params = _random_params(np.random.default_rng(num_levels), 16, num_channels, 4)
  points = _all_levels(num_levels, num_channels)
  log_probs = np.asarray(_log_probs_all(jnp.asarray(params), jnp.asarray(points), num_levels), np.float64)
  assert np.isfinite(log_probs).all()
  # Float32 gives each probability a relative error of a few 1e-7 and the sum telescopes
  # exactly (every bin edge is shared), so 1 is off by at most ~1e-6; 1e-5 leaves margin.
  np.testing.assert_allclose(np.exp(log_probs).sum(axis=1), 1.0, atol=1e-5)


def _log_std_logistic_mass(z_lo, z_hi):
  """log of the standard logistic mass on [z_lo, z_hi] by quadrature (float64).

  Split at the mode so each piece is monotone, and integrate each piece's density
  divided by its largest value (so far tails neither underflow nor lose accuracy).
  """
  log_pdf = lambda z: -abs(z) - 2 * math.log1p(math.exp(-abs(z)))
  pieces = [(z_lo, 0.0), (0.0, z_hi)] if z_lo < 0 < z_hi else [(z_lo, z_hi)]
  terms = []
  for lo, hi in pieces:
    peak = log_pdf(min(max(0.0, lo), hi))
    value, _ = integrate.quad(lambda z: math.exp(log_pdf(z) - peak), lo, hi,
                              epsabs=0, epsrel=1e-12, limit=200)
    terms.append(peak + math.log(value))
  return float(np.logaddexp.reduce(terms))


def _reference_log_prob(params, x, num_levels):
  """log P(x) from the mixture's density integrated over x's bins: float64, no shared code."""
  c = x.shape[0]
  k = params.shape[0] // (1 + 2 * c + c * (c - 1) // 2)
  params = params.astype(np.float64)
  logits, rest = params[:k], params[k:]
  means = rest[:c * k].reshape(c, k)
  log_scales = np.maximum(rest[c * k:2 * c * k].reshape(c, k), -7.0)
  coupling = np.tanh(rest[2 * c * k:].reshape(-1, k))
  centres = 2.0 * x / (num_levels - 1) - 1.0
  half = 1.0 / (num_levels - 1)
  log_weights = logits - np.logaddexp.reduce(logits)
  per_component = []
  for j in range(k):
    total, pair = log_weights[j], 0
    for ch in range(c):
      mu = means[ch, j]
      for prev in range(ch):
        mu += coupling[pair, j] * centres[prev]
        pair += 1
      lo = -np.inf if x[ch] == 0 else centres[ch] - half
      hi = np.inf if x[ch] == num_levels - 1 else centres[ch] + half
      s = math.exp(log_scales[ch, j])
      total += _log_std_logistic_mass((lo - mu) / s, (hi - mu) / s)
    per_component.append(total)
  return float(np.logaddexp.reduce(per_component))


@pytest.mark.parametrize('num_levels,num_channels', [(256, 1), (17, 1), (4, 3)])
def test_matches_quadrature_of_the_density(num_levels, num_channels):
  rng = np.random.default_rng(1)
  num = 48
  params = _random_params(rng, num, num_channels, 3)
  # Two very wide components too: a bin width of 2/(L-1) e^-30 takes the series branch.
  params[:2, 3 + 3 * num_channels:3 + 4 * num_channels] = 30.0
  x = rng.integers(0, num_levels, (num, num_channels)).astype(np.int32)
  x[:4, 0] = [0, num_levels - 1, 0, num_levels - 1]  # Both edge bins, for the wide ones too.
  actual = np.asarray(_log_prob(jnp.asarray(params), jnp.asarray(x), num_levels), np.float64)
  expected = np.array([_reference_log_prob(p, xi, num_levels) for p, xi in zip(params, x)])
  assert expected.min() < -50, 'no far-tail bin among the cases'
  # Float32 places a bin edge only to an ulp of its position in [-1, 1] (<= 1.2e-7),
  # which is 1.2e-7 / s in the logistic's own units: ~1.3e-4 for the narrowest scale
  # allowed (e^-7), and log P moves by at most ~1 per unit there. On top, the rounding
  # of the log-space sums: ~1e-7 |log P| and a few ulps of O(1) terms.
  c = num_channels
  narrowest = np.exp(np.maximum(params[:, 3 + 3 * c:3 + 6 * c], -7.0).min(axis=1))
  tolerance = 2e-5 + 3e-7 * np.abs(expected) + c * 2 * 1.2e-7 / narrowest
  error = np.abs(actual - expected)
  assert np.all(error <= tolerance), (error / tolerance).max()


def test_joint_layout_couples_green_and_blue_to_earlier_channels():
  # One component, RGB: mu_G = m_G + tanh(a) v_R, mu_B = m_B + tanh(b) v_R + tanh(c) v_G.
  means = np.array([[[0.1], [-0.2], [0.3]]])
  log_scales = np.full((1, 3, 1), -2.0)
  coupling = np.arctanh(np.array([[[0.5], [-0.25], [0.75]]]))
  params = jnp.asarray(_pack(np.zeros((1, 1)), means, log_scales, coupling))
  m = logistic_mixture.unpack(params, 3)
  assert params.shape[-1] == logistic_mixture.num_params(3, 1) == 10
  np.testing.assert_allclose(m.coupling[0, :, 0], [0.5, -0.25, 0.75], rtol=1e-6)
  x = np.array([[3, 1, 4]])  # Centres -1 + 2x/4: 0.5, -0.5, 1.0.
  expected = _reference_log_prob(np.asarray(params)[0], x[0], 5)
  mu = np.array([0.1, -0.2 + 0.5 * 0.5, 0.3 - 0.25 * 0.5 + 0.75 * -0.5])
  centres, s = np.array([0.5, -0.5, 1.0]), math.exp(-2.0)
  by_hand = sum(_log_std_logistic_mass((lo - m_) / s, (hi - m_) / s)
                for m_, lo, hi in zip(mu, centres - 0.25, [0.75, -0.25, np.inf]))
  assert expected == pytest.approx(by_hand, abs=1e-6)  # tanh(arctanh(.)) through float32.
  actual = float(_log_prob(params, jnp.asarray(x, jnp.int32), 5)[0])
  assert actual == pytest.approx(by_hand, abs=2e-5)


def test_gradients_are_finite_in_every_regime():
  rng = np.random.default_rng(2)
  params = _random_params(rng, 64, 3, 2)
  params[:8, 2 + 6:2 + 12] = 80.0   # Widths whose bin mass underflows float32's exp.
  params[8:16, 2:2 + 6] = 40.0      # Means far beyond [-1, 1].
  x = jnp.asarray(rng.integers(0, 256, (64, 3)), jnp.int32)
  grads = jax.jit(jax.grad(lambda p: logistic_mixture.log_prob(p, x, 256).sum()))(jnp.asarray(params))
  assert np.isfinite(np.asarray(grads)).all()


@pytest.mark.parametrize('num_levels,num_channels', [(17, 1), (3, 3)])
def test_samples_follow_exp_log_prob(num_levels, num_channels):
  params = _random_params(np.random.default_rng(3), 1, num_channels, 3)[0]
  params[3 + num_channels * 3:3 + num_channels * 6] = -1.0  # Spread over several levels.
  num = 20000
  samples = _sample(
      jax.random.PRNGKey(0), jnp.broadcast_to(jnp.asarray(params), (num, params.size)),
      num_channels=num_channels, num_levels=num_levels)
  assert samples.dtype == jnp.int32 and samples.shape == (num, num_channels)
  points = _all_levels(num_levels, num_channels)
  probs = np.exp(np.asarray(_log_prob(
      jnp.broadcast_to(jnp.asarray(params), (len(points), params.size)), jnp.asarray(points),
      num_levels), np.float64))
  helpers.assert_frequencies_match(np.asarray(samples), probs / probs.sum(), num_levels)


def test_low_temperature_draws_the_mean_of_the_likeliest_component():
  means = np.array([[[-0.5, 0.25]]])
  params = jnp.asarray(_pack(np.array([[0.0, 1.0]]), means, np.full((1, 1, 2), -3.0),
                             np.zeros((1, 0, 2))))
  samples = _sample(jax.random.PRNGKey(0), jnp.broadcast_to(params, (500, 6)), num_channels=1,
                    num_levels=9, temperature=1e-3)
  np.testing.assert_array_equal(samples, 5)  # 0.25 is the centre of level 5 of 9.


def test_refuses_parameters_that_do_not_fit():
  with pytest.raises(ValueError, match='multiple of 10'):
    logistic_mixture.log_prob(jnp.zeros((2, 25)), jnp.zeros((2, 3), jnp.int32), 256)
  with pytest.raises(ValueError, match='agree'):
    logistic_mixture.log_prob(jnp.zeros((2, 30)), jnp.zeros((3, 3), jnp.int32), 256)
  with pytest.raises(ValueError, match='num_levels'):
    logistic_mixture.log_prob(jnp.zeros((2, 3)), jnp.zeros((2, 1), jnp.int32), 1)
