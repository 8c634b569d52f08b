"""The histogram: a joint categorical distribution over a tiny discrete space.

The warm-up of the likelihood-model course (Berkeley CS294-158, lecture 1): one
logit per point of the support, p(x) = softmax(theta)[index(x)], fitted by
maximum likelihood with SGD. Its closed-form MLE is the table of normalised
counts (`fit_counts`), which SGD approaches. Meant for D = 1 or 2 dimensions
(the support has num_levels**D points, so it is refused above 2**20).
"""

import math
from typing import Any, TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from dulx import distributions
from dulx.errors import ConfigError
from dulx.models import check_event_shape, condition_classes, require_levels

if TYPE_CHECKING:
  from dulx.data import DatasetInfo

__all__ = ['Histogram', 'MAX_SUPPORT', 'build', 'fit_counts']

MAX_SUPPORT = 2**20


def _place_values(num_levels: int, num_dims: int) -> jax.Array:
  """[D] int32 L**(D-1-d): the weights of the C-order index over the support."""
  return num_levels ** jnp.arange(num_dims - 1, -1, -1, dtype=jnp.int32)


def _flat_index(x: jax.Array, num_levels: int) -> jax.Array:
  """x: [B, *event_shape] levels in [0, L) -> [B] int32 index into the L**D table."""
  x = x.reshape(x.shape[0], -1).astype(jnp.int32)
  return x @ _place_values(num_levels, x.shape[1])


def _unflatten(index: jax.Array, num_levels: int, event_shape: tuple[int, ...]) -> jax.Array:
  """index: [B] in [0, L**D) -> [B, *event_shape] int32 levels (inverse of _flat_index)."""
  places = _place_values(num_levels, math.prod(event_shape))
  return ((index[:, None] // places) % num_levels).reshape(-1, *event_shape)


def fit_counts(x: jax.Array, num_levels: int, event_shape: tuple[int, ...]) -> jax.Array:
  """The maximum-likelihood histogram: normalised counts.

  argmax_p sum_n log p(x_n) over distributions on the support is p(v) = #{n: x_n = v} / N.

  Args:
    x: [N, *event_shape] int levels in [0, num_levels).
    num_levels: L, levels per dimension.
    event_shape: the shape of one example (D = prod(event_shape)).

  Returns:
    [L] * D float32 table of probabilities summing to 1 (axis d = dimension d).
  """
  num_dims = math.prod(event_shape)
  counts = jnp.bincount(_flat_index(x, num_levels), length=num_levels**num_dims)
  return (counts / x.shape[0]).astype(jnp.float32).reshape((num_levels,) * num_dims)


class Histogram(nn.Module):
  """p(x) = softmax(theta)[index(x)] over the L**D points of a discrete space.

  Class-conditional when `num_classes` is set: one table per class, p(x | y) =
  softmax(theta_y)[index(x)]. The parameter is the logit table `logits`, float32
  [max(num_classes, 1), L**D], initialised to zero (the uniform distribution). The
  table lookup is exact in float32, so `dtype` does not change the computation; it is
  kept for the common model contract.
  """
  event_shape: tuple[int, ...]
  num_levels: int
  num_classes: int | None = None
  dtype: Any = jnp.float32

  def setup(self):
    rows = self.num_classes or 1
    size = self.num_levels ** math.prod(self.event_shape)
    self.logits = self.param('logits', nn.initializers.zeros_init(), (rows, size), jnp.float32)

  def _class_logits(self, y: jax.Array | None, num: int) -> jax.Array:
    """[num, L**D] logits of each example's table (its class's, or the only one)."""
    if self.num_classes is None:
      return jnp.broadcast_to(self.logits[0], (num, self.logits.shape[1]))
    if y is None:
      raise ValueError('this histogram is class-conditional: pass labels y [B].')
    return self.logits[y]

  def __call__(self, x: jax.Array, y: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """The histogram is not autoregressive: its one pass is `log_prob`."""
    return self.log_prob(x, y, train=train)

  def log_prob(self, x: jax.Array, y: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """log p(x) (or log p(x | y)) in nats.

    Args:
      x: [B, *event_shape] int levels in [0, num_levels).
      y: [B] int labels when class-conditional; ignored otherwise.
      train: unused (the histogram has no stochastic layers).

    Returns:
      [B] float32.
    """
    del train
    check_event_shape(x, self.event_shape)
    logp = jax.nn.log_softmax(self._class_logits(y, x.shape[0]), axis=-1)
    return jnp.take_along_axis(logp, _flat_index(x, self.num_levels)[:, None], axis=-1)[:, 0]

  def sample(self, rng: jax.Array, num: int, y: jax.Array | None = None,
             temperature: float = 1.0) -> jax.Array:
    """Draws `num` points directly from the joint table (softmax(theta / temperature)).

    Returns:
      [num, *event_shape] int32 levels in [0, num_levels).
    """
    index = distributions.sample(rng, self._class_logits(y, num), categorical=True,
                                 temperature=temperature)
    return _unflatten(index, self.num_levels, tuple(self.event_shape))

  def probs(self) -> jax.Array:
    """The normalised table, float32 [L] * D, or [num_classes] + [L] * D."""
    table = jax.nn.softmax(self.logits, axis=-1)
    lead = (self.num_classes,) if self.num_classes is not None else ()
    return table.reshape(lead + (self.num_levels,) * math.prod(self.event_shape))


def build(info: 'DatasetInfo', *, dtype: Any = jnp.float32,
          conditional: bool = False) -> Histogram:
  """The histogram of `info`'s data; its support must hold at most 2**20 points.

  Args:
    info: metadata of a discrete dataset.
    dtype: computation dtype (the model contract; the histogram computes in float32).
    conditional: one table per class (needs a labelled dataset).
  """
  num_levels = require_levels(info, 'the histogram')
  num_dims = math.prod(info.shape)
  if num_levels**num_dims > MAX_SUPPORT:
    raise ConfigError(
        f'the histogram of {num_dims} dims x {num_levels} levels has {num_levels}**{num_dims} '
        f'cells, more than 2**20; use data of 1 or 2 dims and fewer levels (--quantize=K).')
  return Histogram(event_shape=tuple(info.shape), num_levels=num_levels,
                   num_classes=condition_classes(info, conditional, 'the histogram'),
                   dtype=dtype)
