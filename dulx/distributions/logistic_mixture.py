"""The discretized logistic mixture likelihood of PixelCNN++.

Salimans et al. 2017, "PixelCNN++: Improving the PixelCNN with Discretized Logistic
Mixture Likelihood and Other Modifications", Sec. 2.1-2.2.

A sub-pixel level x in {0..L-1} is mapped to the centre v = 2x / (L - 1) - 1 of a bin
[v - d, v + d] of [-1, 1], d = 1 / (L - 1); the two edge bins reach out to -inf and
+inf, so the levels share all the mass of the continuous logistic. The C channels of
a pixel share ONE mixture component k (Sec. 2.2):

    P(x) = sum_k pi_k prod_c [sigmoid((v_c + d - mu_kc) / s_kc) - sigmoid((v_c - d - mu_kc) / s_kc)]
    mu_kc = m_kc + sum_{j < c} alpha_kcj v_j   (RGB: mu_G = m_G + a v_R, mu_B = m_B + b v_R + c v_G)

with the first sigmoid replaced by 1 at x = L - 1 and the second by 0 at x = 0.

Parameters: one vector of P = K (1 + 2C + C(C-1)/2) numbers per pixel, laid out as

    [ logits (K) | means (C, K) | log-scales (C, K) | coupling (C(C-1)/2, K) ]

(`num_params`, `unpack`), with (C, K) flattened channel-major and the couplings
(c, j), j < c, in the order (1, 0), (2, 0), (2, 1), ...: RGB gives the paper's
10 K numbers. As in the paper, couplings pass through tanh and log-scales are
clipped below at -7.

Stability. The difference of sigmoids is computed in log space exactly, by

    sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(-(a - b))),   a > b,

each factor through log-sigmoid (softplus) forms, and log(1 - exp(-D)) for the
width D = a - b = 2 d / s by the branches of Maechler (2012, "Accurately computing
log(1 - exp(-|a|))"). Nothing cancels, so nothing underflows where the paper's direct
difference does. The one place left is D itself underflowing (a scale far wider
than the data range): there log(1 - exp(-D)) = log D - D/2 + D^2/24 + O(D^4), with
log D = log(2 d) - log s taken in log space, which is the paper's mid-bin density
approximation, pdf(v) * 2d, carried to second order.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ['MixtureParams', 'log_prob', 'num_params', 'sample', 'unpack']

MIN_LOG_SCALE = -7.0
# Below this width the series of log(1 - exp(-D)) is exact to ~1e-12 (next term D^4 / 2880).
_SERIES_BELOW = 1e-2


class MixtureParams(NamedTuple):
  """The unpacked parameters of a mixture per pixel (S: the batch and pixel axes).

  logits: [*S, K] unnormalised log mixture weights.
  means: [*S, C, K] means m_kc before the channel coupling, in the [-1, 1] scale.
  log_scales: [*S, C, K] log s_kc, clipped below at -7.
  coupling: [*S, C(C-1)/2, K] alpha_kcj in (-1, 1), pairs (c, j) with j < c in order.
  """
  logits: jax.Array
  means: jax.Array
  log_scales: jax.Array
  coupling: jax.Array


def num_params(num_channels: int, num_components: int) -> int:
  """P = K (1 + 2C + C(C-1)/2): parameters per pixel (10 K for RGB)."""
  return num_components * (1 + 2 * num_channels + num_channels * (num_channels - 1) // 2)


def _num_components(params: jax.Array, num_channels: int) -> int:
  per_component = num_params(num_channels, 1)
  if params.shape[-1] % per_component:
    raise ValueError(f'{params.shape[-1]} parameters per pixel are not a multiple of '
                     f'{per_component}, the parameters of one component over {num_channels} '
                     'channel(s).')
  return params.shape[-1] // per_component


def unpack(params: jax.Array, num_channels: int) -> MixtureParams:
  """Splits [*S, P] raw parameters (module docstring layout) into MixtureParams, in float32."""
  params = params.astype(jnp.float32)
  k, c = _num_components(params, num_channels), num_channels
  batch = params.shape[:-1]
  sizes = [k, c * k, c * k, c * (c - 1) // 2 * k]
  logits, means, log_scales, coupling = jnp.split(params, np.cumsum(sizes)[:-1].tolist(), -1)
  return MixtureParams(
      logits=logits,
      means=means.reshape(*batch, c, k),
      log_scales=jnp.maximum(log_scales.reshape(*batch, c, k), MIN_LOG_SCALE),
      coupling=jnp.tanh(coupling.reshape(*batch, c * (c - 1) // 2, k)))


def _coupled_means(m: MixtureParams, centres: jax.Array) -> jax.Array:
  """mu_kc = m_kc + sum_{j<c} alpha_kcj v_j: [*S, C, K] from centres v [*S, C]."""
  num_channels = m.means.shape[-2]
  means, pair = [], 0
  for c in range(num_channels):
    mean = m.means[..., c, :]
    for j in range(c):
      mean = mean + m.coupling[..., pair, :] * centres[..., j, None]
      pair += 1
    means.append(mean)
  return jnp.stack(means, axis=-2)


def _log1mexp(width: jax.Array, log_width: jax.Array) -> jax.Array:
  """log(1 - exp(-D)) for D > 0, given D and log D (finite even where D underflows).

  Maechler's two branches (log(-expm1(-D)) below log 2, log1p(-exp(-D)) above) and,
  below _SERIES_BELOW, the series log D - D/2 + D^2/24. Each branch sees a safe
  argument, so the unused ones put no NaN into the gradient.
  """
  series = width < _SERIES_BELOW
  near = ~series & (width <= math.log(2.0))
  far = width > math.log(2.0)
  near_value = jnp.log(-jnp.expm1(-jnp.where(near, width, 1.0)))
  far_value = jnp.log1p(-jnp.exp(-jnp.where(far, width, 1.0)))
  small = jnp.where(series, width, 0.0)
  series_value = log_width - small / 2 + small**2 / 24
  return jnp.where(series, series_value, jnp.where(near, near_value, far_value))


def _log_bin_mass(x: jax.Array, means: jax.Array, log_scales: jax.Array,
                  num_levels: int) -> jax.Array:
  """log P(bin of x) under logistic(means, exp(log_scales)): [*S, C, K], elementwise.

  x: [*S, C, 1] int levels; means and log_scales [*S, C, K].
  """
  # Edges from the integers 2x +- 1, so that the upper edge of x and the lower edge of
  # x + 1 are the same float and the bin masses telescope to 1.
  twice = 2 * x.astype(jnp.float32)
  inv_scale = jnp.exp(-log_scales)
  upper = inv_scale * ((twice + 1) / (num_levels - 1) - 1 - means)  # a
  lower = inv_scale * ((twice - 1) / (num_levels - 1) - 1 - means)  # b
  log_cdf_upper = jax.nn.log_sigmoid(upper)  # x = 0: P = sigmoid(a).
  log_sf_lower = jax.nn.log_sigmoid(-lower)  # x = L - 1: P = 1 - sigmoid(b).
  log_width = math.log(2.0 / (num_levels - 1)) - log_scales
  interior = log_cdf_upper + log_sf_lower + _log1mexp(jnp.exp(log_width), log_width)
  return jnp.where(x == 0, log_cdf_upper, jnp.where(x == num_levels - 1, log_sf_lower, interior))


def log_prob(params: jax.Array, x: jax.Array, num_levels: int) -> jax.Array:
  """log P(x) of each pixel under its discretized logistic mixture.

  Args:
    params: [*S, P] raw mixture parameters (module docstring layout), any float dtype;
      e.g. S = (B, H, W).
    x: [*S, C] int levels in [0, num_levels): all channels of each pixel.
    num_levels: L >= 2.

  Returns:
    [*S] float32 log-probabilities in nats of the whole pixel (its C channels jointly).
  """
  if num_levels < 2:
    raise ValueError(f'num_levels must be >= 2, got {num_levels}.')
  if params.shape[:-1] != x.shape[:-1]:
    raise ValueError(f'params of shape {params.shape} do not fit pixels x of shape {x.shape}: '
                     'they must agree on every axis but the last.')
  m = unpack(params, x.shape[-1])
  x = x.astype(jnp.int32)
  centres = 2.0 * x.astype(jnp.float32) / (num_levels - 1) - 1.0
  means = _coupled_means(m, centres)
  per_channel = _log_bin_mass(x[..., None], means, m.log_scales, num_levels)
  log_weights = jax.nn.log_softmax(m.logits, axis=-1)
  return jax.nn.logsumexp(log_weights + per_channel.sum(axis=-2), axis=-1)


def sample(rng: jax.Array, params: jax.Array, *, num_channels: int, num_levels: int,
           temperature: float | jax.Array = 1.0) -> jax.Array:
  """Draws each pixel's C channels jointly from its discretized logistic mixture.

  One component k per pixel from softmax(logits / T); then channel by channel in
  order, the coupled mean from the *levels* already drawn (the bin centres
  `log_prob` conditions on, so the draws follow exp(log_prob) exactly at T = 1),
  a logistic value mu + T s log(u / (1 - u)), u ~ U(0, 1) (the inverse CDF), and
  the level whose bin holds it (edge bins unbounded). T < 1 sharpens both the
  choice of component and each logistic.

  Args:
    rng: a PRNG key.
    params: [*S, P] raw mixture parameters.
    num_channels: C.
    num_levels: L >= 2.
    temperature: T > 0.

  Returns:
    [*S, C] int32 levels in [0, num_levels).
  """
  m = unpack(params, num_channels)
  component_rng, noise_rng = jax.random.split(rng)
  k = jax.random.categorical(component_rng, m.logits / temperature, axis=-1)
  pick = lambda a: jnp.take_along_axis(a, k[..., None, None], axis=-1)[..., 0]
  means, log_scales, coupling = pick(m.means), pick(m.log_scales), pick(m.coupling)
  # u in [tiny, 1): log u and log(1 - u) stay finite; the tails lost have mass ~1e-38.
  u = jax.random.uniform(noise_rng, means.shape, minval=jnp.finfo(jnp.float32).tiny, maxval=1.0)
  noise = jnp.log(u) - jnp.log1p(-u)
  levels, centres, pair = [], [], 0
  for c in range(num_channels):
    mean = means[..., c]
    for j in range(c):
      mean = mean + coupling[..., pair] * centres[j]
      pair += 1
    value = mean + temperature * jnp.exp(log_scales[..., c]) * noise[..., c]
    level = jnp.clip(jnp.floor((value + 1.0) * (num_levels - 1) / 2 + 0.5), 0, num_levels - 1)
    levels.append(level.astype(jnp.int32))
    centres.append(2.0 * level / (num_levels - 1) - 1.0)
  return jnp.stack(levels, axis=-1)
