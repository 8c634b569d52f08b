"""What NICE, RealNVP and Glow share: a flow on images of discrete levels, made a model.

    log p(x) >= log p_Z(z) + log|det dz/dw| + log|det dw/dv| - D log L - log q(u | x)

with v = (x + u) / L the dequantized image (`dequantization`), w = logit(alpha +
(1 - 2 alpha) v) the flow's input (`base.logit_preprocess`) and z = f(w) the flow's
output (`ImageFlow.make_flow`), of the same shape as the image. Every Jacobian is
counted, so `log_prob` bounds the log-probability of the discrete data and its
bits/dim compare with the literature (see `dulx.models.flows.base`).

Sampling runs the chain backwards: z ~ p_Z at temperature T (z scaled by T),
w = f^-1(z), v = (sigmoid(w) - alpha) / (1 - 2 alpha), x = floor(L v).
"""

import math
from typing import Any, TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from dulx.errors import ConfigError
from dulx.models import check_event_shape, require_choice, require_int, require_levels
from dulx.models.flows import base, dequantization
from dulx.models.flows.dequantization import DEQUANTIZATIONS

if TYPE_CHECKING:
  from dulx.data import DatasetInfo

__all__ = ['ImageFlow', 'PRIORS', 'image_flow_fields', 'require_alpha', 'require_squeezable']

PRIORS = ('normal', 'logistic')


class ImageFlow(nn.Module):
  """A flow model of images of discrete levels; subclasses define `make_flow()`.

  `make_flow()` returns the flow f (a module keeping the contract of
  `dulx.models.flows.layers`) mapping w [B, H, W, C] to z of the same shape.
  `make_dequantizer()` returns the dequantizer x -> (v, log q(u | x)); subclasses may
  override it to give variational dequantization a flow of their own kind.

  The base density p_Z is a standard normal or logistic per dimension; when
  class-conditional (num_classes set) it is shifted and scaled per class,
  z = mu_y + exp(sigma_y) * z0, with mu_y and sigma_y learned per class and
  dimension (starting at 0: the unconditional prior), as Glow's class-conditional
  prior (Kingma & Dhariwal 2018, Sec. 5).

  Attributes:
    event_shape: (H, W, C) of one image.
    num_levels: L, levels per sub-pixel.
    num_classes: number of classes when class-conditional, else None.
    dtype: computation dtype of the coupling networks (the flow's arithmetic and
      the likelihood stay float32).
    dequantization: 'uniform' or 'variational'.
    dequantization_hidden: features of the variational dequantizer's networks.
    alpha: logit preprocessing margin, in (0, 0.5).
    prior: 'normal' or 'logistic' base density.
  """
  event_shape: tuple[int, ...]
  num_levels: int
  num_classes: int | None = None
  dtype: Any = jnp.float32
  dequantization: str = 'uniform'
  dequantization_hidden: int = 32
  alpha: float = 0.05
  prior: str = 'normal'

  @property
  def log_prob_is_bound(self) -> bool:
    """Whether `log_prob` is one draw of a stochastic lower bound on log P(x) (the
    dequantization bound), which `dulx.eval.importance` tightens: read by the harness."""
    return True

  def setup(self):
    if self.prior not in PRIORS:
      raise ValueError(f'unknown prior {self.prior!r}; expected one of {PRIORS}.')
    self.flow = self.make_flow()
    self.dequantizer = self.make_dequantizer()
    if self.num_classes is not None:
      self.class_prior = nn.Embed(self.num_classes, 2 * math.prod(self.event_shape),
                                  embedding_init=nn.initializers.zeros)

  def make_dequantizer(self) -> nn.Module:
    """The dequantizer of the `dequantization` field (see `dequantization.make_dequantizer`)."""
    return dequantization.make_dequantizer(self.dequantization, self.num_levels,
                                           self.dequantization_hidden, self.dtype)

  def _prior_shift_and_log_scale(self, y: jax.Array | None, batch: int):
    """(mu, sigma) [B, H, W, C] of the class-conditional prior, or (0, 0)."""
    if self.num_classes is None:
      zeros = jnp.zeros((batch, *self.event_shape), jnp.float32)
      return zeros, zeros
    if y is None:
      raise ValueError(f'this {type(self).__name__} is class-conditional: pass labels y [B].')
    shift, log_scale = jnp.split(self.class_prior(y).astype(jnp.float32), 2, axis=-1)
    return (shift.reshape(batch, *self.event_shape), log_scale.reshape(batch, *self.event_shape))

  def _base_log_prob(self, z0: jax.Array) -> jax.Array:
    if self.prior == 'logistic':
      return base.standard_logistic_log_prob(z0)
    return base.standard_normal_log_prob(z0)

  def log_prob(self, x: jax.Array, y: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """The dequantization bound on log P(x) (or log P(x | y)) in nats.

    Args:
      x: [B, H, W, C] int levels in [0, num_levels).
      y: [B] int labels in [0, num_classes) when class-conditional; ignored otherwise.
      train: batch statistics in batch normalisation layers (and their update).

    Returns:
      [B] float32, log p(v) - D log L - log q(u | x) for one draw of u ('dequantize' rng).
    """
    check_event_shape(x, self.event_shape)
    v, log_q = self.dequantizer(x)
    w, logdet_logit = base.logit_preprocess(v, self.alpha)
    z, logdet_flow = self.flow.forward(w, train=train)
    shift, log_scale = self._prior_shift_and_log_scale(y, x.shape[0])
    z0 = (z - shift) * jnp.exp(-log_scale)
    log_pz = self._base_log_prob(z0) - log_scale.reshape(x.shape[0], -1).sum(axis=-1)
    offset = base.discrete_log_prob_offset(math.prod(self.event_shape), self.num_levels)
    return log_pz + logdet_flow + logdet_logit + offset - log_q

  def __call__(self, x: jax.Array, y: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """`log_prob` (what `init` runs: data-dependent initialisers see this batch)."""
    return self.log_prob(x, y, train=train)

  def sample(self, rng: jax.Array, num: int, y: jax.Array | None = None,
             temperature: float | jax.Array = 1.0) -> jax.Array:
    """Draws images: z0 ~ p_Z scaled by the temperature, inverted through the flow.

    Args:
      rng: a PRNG key.
      num: number of images.
      y: [num] int labels when class-conditional; ignored otherwise.
      temperature: T > 0; z0 = T * (standard normal or logistic draw). T < 1 trades
        diversity for fidelity (Kingma & Dhariwal 2018, Sec. 5).

    Returns:
      [num, H, W, C] int32 levels in [0, num_levels).
    """
    shape = (num, *self.event_shape)
    if self.prior == 'logistic':
      z0 = jax.random.logistic(rng, shape, jnp.float32)
    else:
      z0 = jax.random.normal(rng, shape, jnp.float32)
    shift, log_scale = self._prior_shift_and_log_scale(y, num)
    z = shift + jnp.exp(log_scale) * (temperature * z0)
    w, _ = self.flow.inverse(z)
    return base.levels_from_unit(base.logit_postprocess(w, self.alpha), self.num_levels)


# Checks that the builders of image flows share (each raises ConfigError with one line).


def _require_images(info: 'DatasetInfo', model: str) -> tuple[int, int, int]:
  if len(info.shape) != 3:
    raise ConfigError(f'{model} models images of shape (H, W, C), but {info.spec!r} has '
                      f'examples of shape {tuple(info.shape)}.')
  return tuple(info.shape)


def require_alpha(alpha: Any) -> float:
  """The logit margin alpha as a float in (0, 0.5)."""
  if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 0.5:
    raise ConfigError(f'--alpha must be a number in (0, 0.5), got {alpha!r}.')
  return float(alpha)


def require_squeezable(shape: tuple[int, int, int], squeezes: int, flag: str) -> None:
  """ConfigError unless H and W are divisible by 2^squeezes."""
  h, w, _ = shape
  if h % 2**squeezes or w % 2**squeezes:
    raise ConfigError(f'--{flag} needs height and width divisible by {2**squeezes}, '
                      f'but the images are {h}x{w}.')


def image_flow_fields(info: 'DatasetInfo', model: str, dequantization: Any, dequantization_hidden: Any,
                      alpha: Any) -> dict[str, Any]:
  """The validated fields every ImageFlow shares (but num_classes)."""
  return dict(event_shape=_require_images(info, model), num_levels=require_levels(info, model),
              dequantization=require_choice('dequantization', dequantization, DEQUANTIZATIONS),
              dequantization_hidden=require_int('dequantization_hidden', dequantization_hidden),
              alpha=require_alpha(alpha))
