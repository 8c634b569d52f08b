"""CDF flows: 1-D and 2-D densities as the derivative of a learned mixture CDF.

The flow of week 2 of the deep-unsupervised-learning course (CS294-158): a
continuous density on R is the derivative of an increasing map F onto (0, 1), and
F is the CDF of a mixture of K Gaussians or logistics, so

    z = F(x) = sum_k pi_k G((x - mu_k) / s_k),      z ~ U(0, 1),
    log p(x) = log |dz/dx| = log F'(x) = logsumexp_k [log pi_k + log g((x - mu_k) / s_k) - log s_k],

with G, g the standard normal (or logistic) CDF and density. In D dimensions the flow
is autoregressive (Papamakarios et al. 2017, Sec. 2): dimension d goes through the
mixture CDF whose parameters are an MLP of x_<d (dimension 0 has free parameters),

    z_d = F_d(x_d | x_<d),    log p(x) = sum_d log F_d'(x_d | x_<d),

a triangular map whose Jacobian determinant is the product of the D densities. The
base density is uniform on (0, 1)^D, so log p(x) is exactly the forward logdet.
F has no closed-form inverse: `inverse` solves F_d(x_d) = z_d by bisection with a
fixed number of halvings (one compiled loop, no data-dependent control flow),
dimension by dimension.
"""

import math
from typing import Any, Literal, TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from dulx.errors import ConfigError
from dulx.models import check_event_shape, require_choice, require_int, require_positive_sizes

if TYPE_CHECKING:
  from dulx.data import DatasetInfo

__all__ = ['COMPONENTS', 'CDFFlow', 'bisect', 'build', 'mixture_cdf', 'mixture_log_density']

COMPONENTS = ('logistic', 'gaussian')
# Scales below e^-7 (about 1e-3 of the toy sets' unit) only let a component collapse
# onto a single training point, where the likelihood is unbounded.
_MIN_LOG_SCALE = -7.0
# The bisection bracket reaches this many scales past the outermost components, where
# every component's CDF is within float32 rounding of 0 or 1.
_BRACKET_SCALES = 40.0


def _standardise(x: jax.Array, means: jax.Array, log_scales: jax.Array) -> jax.Array:
  return (x[..., None] - means) * jnp.exp(-log_scales)


def mixture_log_density(x: jax.Array, logits: jax.Array, means: jax.Array,
                        log_scales: jax.Array, component: str) -> jax.Array:
  """log sum_k pi_k g((x - mu_k) / s_k) / s_k, pi = softmax(logits).

  Args:
    x: [...] float32 points.
    logits, means, log_scales: [..., K] float32 mixture parameters of each point.
    component: 'logistic' or 'gaussian'.

  Returns:
    [...] float32 log-densities.
  """
  u = _standardise(x, means, log_scales)
  if component == 'gaussian':
    log_g = -0.5 * (u * u + math.log(2.0 * math.pi))
  else:  # log of the logistic density sigmoid(u) sigmoid(-u), stable for large |u|.
    log_g = -u - 2.0 * jax.nn.softplus(-u)
  return jax.nn.logsumexp(jax.nn.log_softmax(logits, axis=-1) + log_g - log_scales, axis=-1)


def mixture_cdf(x: jax.Array, logits: jax.Array, means: jax.Array, log_scales: jax.Array,
                component: str) -> jax.Array:
  """sum_k pi_k G((x - mu_k) / s_k) in [0, 1]: shapes as `mixture_log_density`."""
  u = _standardise(x, means, log_scales)
  cdf = jax.scipy.special.ndtr(u) if component == 'gaussian' else jax.nn.sigmoid(u)
  return jnp.sum(jax.nn.softmax(logits, axis=-1) * cdf, axis=-1)


def bisect(fn, target: jax.Array, low: jax.Array, high: jax.Array, num_steps: int) -> jax.Array:
  """The x in [low, high] with fn(x) = target for an increasing fn, by bisection.

  Every step halves the bracket [low, high] (elementwise), keeping fn(low) <= target
  <= fn(high) where it held at the start; after n steps the error is at most
  (high - low) / 2^(n + 1), down to float32 rounding. Targets outside fn's range end
  at the nearer end of the bracket.

  Args:
    fn: [...] -> [...], elementwise increasing.
    target, low, high: [...] float32.
    num_steps: the number of halvings (a Python int; a fixed-length loop).

  Returns:
    [...] float32, the bracket's midpoint after the last halving.
  """
  def halve(_, bracket):
    low, high = bracket
    middle = 0.5 * (low + high)
    below = fn(middle) < target
    return jnp.where(below, middle, low), jnp.where(below, high, middle)

  low, high = jax.lax.fori_loop(0, num_steps, halve, (low, high))
  return 0.5 * (low + high)


class CDFFlow(nn.Module):
  """An autoregressive mixture-CDF flow over points x in R^D, D in {1, 2}.

  Parameters: dimension 0's mixture (logits, means, log-scales, each [K]) directly;
  dimension d > 0's from an MLP of x_<d (ReLU hidden layers, output 3K). The MLP's
  output layer starts at zero weight, so each dimension starts as the same fixed
  mixture: K components spread evenly over `init_range`.

  Attributes:
    event_shape: (D,) with D in {1, 2}.
    num_classes: unused (toy points have no labels); None by the model contract.
    dtype: computation dtype of the MLPs (the mixture and densities are float32).
    num_components: K, mixture components per dimension.
    component: 'logistic' or 'gaussian'.
    hidden_sizes: widths of the conditioner MLPs' hidden layers.
    init_range: (low, high) over which the initial component means are spread.
    bisection_steps: halvings of the bracket in `inverse`.
  """
  event_shape: tuple[int, ...]
  num_classes: int | None = None
  dtype: Any = jnp.float32
  num_components: int = 8
  component: str = 'logistic'
  hidden_sizes: tuple[int, ...] = (64, 64)
  init_range: tuple[float, float] = (-4.0, 4.0)
  bisection_steps: int = 50

  @property
  def num_dims(self) -> int:
    return self.event_shape[0]

  @property
  def latent_bounds(self) -> tuple[float, float]:
    """The range of z = forward(x): the unit interval (square)."""
    return 0.0, 1.0

  def _initial_mixture(self) -> jax.Array:
    """[3K]: zero logits, means spread over init_range, scales of the spacing."""
    low, high = self.init_range
    k = self.num_components
    means = jnp.linspace(low, high, k + 2)[1:-1]
    log_scale = math.log((high - low) / (k + 1))
    return jnp.concatenate([jnp.zeros(k), means, jnp.full(k, log_scale)]).astype(jnp.float32)

  def setup(self):
    if len(self.event_shape) != 1 or self.num_dims not in (1, 2):
      raise ValueError(f'CDFFlow models points of shape (1,) or (2,), got {self.event_shape}.')
    if self.component not in COMPONENTS:
      raise ValueError(f'component must be one of {COMPONENTS}, got {self.component!r}.')
    self.first = self.param('first_mixture', lambda _: self._initial_mixture())
    self.conditioners = [self._mlp(f'conditioner{d}') for d in range(1, self.num_dims)]

  def _mlp(self, name: str) -> nn.Sequential:
    layers = []
    for width in self.hidden_sizes:
      layers += [nn.Dense(width, dtype=self.dtype), nn.relu]
    layers.append(nn.Dense(3 * self.num_components, dtype=self.dtype,
                           kernel_init=nn.initializers.zeros_init(),
                           bias_init=lambda *_: self._initial_mixture()))
    return nn.Sequential(layers, name=name)

  def _mixture(self, d: int, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Mixture parameters of dimension d given x[:, :d]: three [B, K] float32 arrays."""
    if d == 0:
      params = jnp.broadcast_to(self.first, (x.shape[0], self.first.shape[0]))
    else:
      params = self.conditioners[d - 1](x[:, :d].astype(self.dtype)).astype(jnp.float32)
    logits, means, log_scales = jnp.split(params, 3, axis=-1)
    return logits, means, jnp.maximum(log_scales, _MIN_LOG_SCALE)

  def _log_density(self, x: jax.Array) -> jax.Array:
    """[B, D] -> [B]: sum_d log F_d'(x_d | x_<d)."""
    terms = [mixture_log_density(x[:, d], *self._mixture(d, x), self.component)
             for d in range(self.num_dims)]
    return sum(terms)

  def forward(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """z_d = F_d(x_d | x_<d).

    Args:
      x: [B, D] float points.

    Returns:
      z: [B, D] float32 in [0, 1] (open in exact arithmetic; float32 rounds far
        tails to the ends), and logdet [B] = log |det dz/dx| = log p(x).
    """
    check_event_shape(x, self.event_shape)
    x = x.astype(jnp.float32)
    z = jnp.stack([mixture_cdf(x[:, d], *self._mixture(d, x), self.component)
                   for d in range(self.num_dims)], axis=-1)
    return z, self._log_density(x)

  def inverse(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x_d = F_d^{-1}(z_d | x_<d), dimension after dimension, each by bisection.

    The bracket of dimension d spans its components' means +- 40 of their largest
    scale, where every component's CDF is 0 or 1 to float32 precision.

    Args:
      z: [B, D] float in [0, 1].

    Returns:
      x: [B, D] float32, and logdet [B] = log |det dx/dz| = -log p(x).
    """
    check_event_shape(z, self.event_shape)
    z = z.astype(jnp.float32)
    x = jnp.zeros_like(z)
    for d in range(self.num_dims):
      logits, means, log_scales = self._mixture(d, x)
      reach = _BRACKET_SCALES * jnp.exp(jnp.max(log_scales, axis=-1))
      low, high = jnp.min(means, axis=-1) - reach, jnp.max(means, axis=-1) + reach
      cdf = lambda v, p=(logits, means, log_scales): mixture_cdf(v, *p, self.component)
      x = x.at[:, d].set(bisect(cdf, z[:, d], low, high, self.bisection_steps))
    return x, -self._log_density(x)

  def __call__(self, x: jax.Array, y: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """A flow has no per-dimension outputs: its one pass is `log_prob`."""
    return self.log_prob(x, y, train=train)

  def log_prob(self, x: jax.Array, y: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """log p(x) = log |det dz/dx| (the uniform base has log-density 0 on (0, 1)^D).

    Args:
      x: [B, D] float points (any real values).
      y: unused (toy points have no labels).
      train: unused (no stochastic layers).

    Returns:
      [B] float32 log-densities in nats.
    """
    del y, train
    check_event_shape(x, self.event_shape)
    return self._log_density(x.astype(jnp.float32))

  def sample(self, rng: jax.Array, num: int, y: jax.Array | None = None,
             temperature: float | jax.Array = 1.0) -> jax.Array:
    """x = F^{-1}(z) for z ~ U(0, 1)^D, tempered in the Gaussian view of the base.

    Temperature T maps z to Phi(T Phi^{-1}(z)): the uniform base is Phi of a standard
    normal, and T scales that normal as in Gaussian-base flows (T = 1 leaves z
    unchanged; T < 1 draws towards each conditional median).

    Args:
      rng: PRNG key.
      num: number of points.
      y: unused.
      temperature: > 0.

    Returns:
      [num, D] float32 points.
    """
    del y
    tiny = jnp.finfo(jnp.float32).tiny
    u = jax.random.uniform(rng, (num, self.num_dims), jnp.float32, minval=tiny)
    z = jax.scipy.special.ndtr(temperature * jax.scipy.special.ndtri(u))
    return self.inverse(z)[0]


def build(info: 'DatasetInfo', *, dtype: Any = jnp.float32, num_components: int = 8,
          component: Literal['logistic', 'gaussian'] = 'logistic',
          hidden_sizes: tuple[int, ...] = (64, 64), bisection_steps: int = 50) -> CDFFlow:
  """A mixture-CDF flow for `info`'s continuous 1-D or 2-D points (toy1d:, toy2d:).

  Args:
    info: metadata of a continuous dataset of points of shape (1,) or (2,).
    dtype: computation dtype of the conditioner MLPs.
    num_components: mixture components per dimension (>= 1).
    component: the mixture's components: 'logistic' or 'gaussian'.
    hidden_sizes: widths of the MLP that maps x_1 to the mixture of x_2 (each >= 1).
    bisection_steps: halvings of the bracket when inverting the CDF for sampling (>= 1).
  """
  if info.num_levels is not None:
    raise ConfigError(f'cdf_flow models continuous points (toy1d:, toy2d: without --quantize), '
                      f'but {info.spec!r} has {info.num_levels} discrete levels.')
  if len(info.shape) != 1 or info.shape[0] not in (1, 2):
    raise ConfigError(f'cdf_flow models 1-D or 2-D points, but {info.spec!r} has examples of '
                      f'shape {tuple(info.shape)}.')
  return CDFFlow(
      event_shape=tuple(info.shape), dtype=dtype,
      num_components=require_int('num_components', num_components),
      component=require_choice('component', component, COMPONENTS),
      hidden_sizes=require_positive_sizes('hidden_sizes', hidden_sizes),
      init_range=tuple(info.bounds) if info.bounds else (-4.0, 4.0),
      bisection_steps=require_int('bisection_steps', bisection_steps))
