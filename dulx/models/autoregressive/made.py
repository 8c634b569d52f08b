"""MADE: Masked Autoencoder for Distribution Estimation (Germain et al. 2015).

An MLP over the D flattened dimensions whose weight matrices are masked so that
output d depends only on inputs that precede d in an ordering: the D outputs are
then the conditionals p(x_d | x_<d) of an autoregressive model, all computed in one
pass.

Degrees (paper Sec. 4). Input d has degree m0(d) = its rank (1..D) in the ordering.
Hidden unit k of layer l has a degree drawn uniformly from
[min_k' m(l-1)(k'), D - 1]. A hidden weight from unit d to unit k is kept iff
m(l)(k) >= m(l-1)(d); an output weight from hidden unit k to output d iff
m0(d) > m(L)(k) (strict), which makes the network autoregressive.

Connectivity-agnostic training (Sec. 4.2). With `num_masks` K > 1, mask i is
drawn from the key fold_in(PRNGKey(mask_seed), i); training picks i uniformly each
step, and evaluation averages the K models' probabilities (an ensemble):
log p(x) = logsumexp_i log p(x | mask i) - log K. Order-agnostic training also
draws each mask's input ordering from its key. Masks are computed from the key
inside the forward pass, so the choice of mask is a traced integer and one
compiled step serves every mask.
"""

import math
from typing import Any, Literal, TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dulx import distributions
from dulx.models import (LIKELIHOODS, check_event_shape, condition_classes, require_bool,
                         require_choice, require_int, require_levels, require_positive_sizes,
                         resolve_likelihood)
from dulx.nn import MaskedDense, degree_mask

if TYPE_CHECKING:
  from dulx.data import DatasetInfo

__all__ = ['MADE', 'build']

ORDERINGS = ('natural', 'random')


class MADE(nn.Module):
  """A masked MLP that outputs the autoregressive conditionals of x.

  Input: x / (num_levels - 1) in [0, 1], one unit per dimension. Output: one
  logit per dimension (likelihood 'bernoulli', num_levels == 2) or num_levels
  logits per dimension ('categorical'; the output mask is repeated per level).
  Class-conditional when `num_classes` is set: one_hot(y) enters every hidden
  layer and the output through unmasked weights (y is not part of x, so every
  output may see it).

  Attributes:
    event_shape: shape of one example; D = prod(event_shape), flattened in C order.
    num_levels: L, levels per dimension.
    num_classes: number of classes when class-conditional, else None.
    dtype: computation dtype (parameters and logits stay float32).
    hidden_sizes: widths of the ReLU hidden layers (empty: a masked logistic model).
    num_masks: K, the number of connectivities (and orderings) trained and averaged.
    order: 'natural' (0..D-1), 'random' (one permutation from mask_seed), or an
      explicit permutation of range(D); ignored when order_agnostic.
    order_agnostic: each mask draws its own random ordering.
    mask_seed: seed of the mask keys fold_in(PRNGKey(mask_seed), i).
    likelihood: 'bernoulli' or 'categorical'.
  """
  event_shape: tuple[int, ...]
  num_levels: int
  num_classes: int | None = None
  dtype: Any = jnp.float32
  hidden_sizes: tuple[int, ...] = (512, 512)
  num_masks: int = 1
  order: str | tuple[int, ...] = 'natural'
  order_agnostic: bool = False
  mask_seed: int = 0
  likelihood: str = 'categorical'

  @property
  def num_dims(self) -> int:
    return math.prod(self.event_shape)

  @property
  def _outputs_per_dim(self) -> int:
    return 1 if self.likelihood == 'bernoulli' else self.num_levels

  def setup(self):
    if self.likelihood not in LIKELIHOODS:
      raise ValueError(f'likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}.')
    if self.likelihood == 'bernoulli' and self.num_levels != 2:
      raise ValueError(f'a Bernoulli MADE needs num_levels == 2, got {self.num_levels}.')
    if isinstance(self.order, str):
      if self.order not in ORDERINGS:
        raise ValueError(f'order must be one of {ORDERINGS} or a permutation, got {self.order!r}.')
    elif sorted(self.order) != list(range(self.num_dims)):
      raise ValueError(f'order {self.order} is not a permutation of range({self.num_dims}).')
    widths = tuple(self.hidden_sizes) + (self.num_dims * self._outputs_per_dim,)
    self.layers = [MaskedDense(w, dtype=self.dtype) for w in widths]
    if self.num_classes is not None:
      self.class_projections = [nn.Dense(w, use_bias=False, dtype=self.dtype) for w in widths]

  def _mask_ordering(self, mask_index: int | jax.Array) -> jax.Array:
    """[D] int32: the flat dims in generation order for mask `mask_index`."""
    if not self.order_agnostic and self.order != 'random':
      if self.order == 'natural':
        return jnp.arange(self.num_dims, dtype=jnp.int32)
      return jnp.asarray(self.order, jnp.int32)
    index = mask_index if self.order_agnostic else 0
    key = jax.random.fold_in(jax.random.PRNGKey(self.mask_seed), index)
    return jax.random.permutation(jax.random.split(key)[0], self.num_dims).astype(jnp.int32)

  def _degrees(self, mask_index: int | jax.Array) -> list[jax.Array]:
    """[m0 [D], m1 [H1], ..., mL [HL]]: input and hidden degrees of mask `mask_index`."""
    key = jax.random.fold_in(jax.random.PRNGKey(self.mask_seed), mask_index)
    layer_keys = jax.random.split(jax.random.split(key)[1], max(len(self.hidden_sizes), 1))
    rank = jnp.argsort(self._mask_ordering(mask_index))
    degrees = [rank.astype(jnp.int32) + 1]
    lowest = 1
    for layer_key, width in zip(layer_keys, self.hidden_sizes):
      # Degrees in [lowest, D - 1] (randint excludes maxval): a unit of degree D could
      # reach no output. For D == 1 every unit gets degree 1 and reaches no output.
      degree = jax.random.randint(layer_key, (width,), lowest, max(self.num_dims, 2))
      degrees.append(degree)
      lowest = jnp.min(degree)
    return degrees

  def masks(self, mask_index: int | jax.Array = 0) -> list[jax.Array]:
    """The masks of connectivity `mask_index`, one [in, out] matrix per layer, in `dtype`."""
    degrees = self._degrees(mask_index)
    hidden = [degree_mask(d_in, d_out, strict=False, dtype=self.dtype)
              for d_in, d_out in zip(degrees[:-1], degrees[1:])]
    out_degrees = jnp.repeat(degrees[0], self._outputs_per_dim)
    return hidden + [degree_mask(degrees[-1], out_degrees, strict=True, dtype=self.dtype)]

  def ordering(self, mask_index: int = 0) -> np.ndarray:
    """[D] int: flat (C-order) dims in the generation order of mask `mask_index`."""
    with jax.ensure_compile_time_eval():
      return np.asarray(self._mask_ordering(mask_index))

  def network(self, u: jax.Array, y: jax.Array | None = None, *,
              mask_index: int | jax.Array = 0) -> jax.Array:
    """The masked MLP on real-valued inputs (differentiable in u).

    Args:
      u: [B, *event_shape] float inputs; levels enter as x / (num_levels - 1).
      y: [B] int labels when class-conditional; ignored otherwise.
      mask_index: which of the K connectivities, an int or traced int32 in [0, K).

    Returns:
      float32 logits [B, *event_shape] (Bernoulli) or [B, *event_shape, L].
    """
    check_event_shape(u, self.event_shape)
    if self.num_classes is not None:
      if y is None:
        raise ValueError('this MADE is class-conditional: pass labels y [B].')
      one_hot = jax.nn.one_hot(y, self.num_classes, dtype=self.dtype)
    h = u.reshape(u.shape[0], self.num_dims).astype(self.dtype)
    masks = self.masks(mask_index)
    for i, (layer, mask) in enumerate(zip(self.layers, masks)):
      h = layer(h, mask)
      if self.num_classes is not None:
        h = h + self.class_projections[i](one_hot)
      if i < len(self.layers) - 1:
        h = nn.relu(h)
    shape = (u.shape[0], *self.event_shape)
    if self.likelihood == 'categorical':
      shape += (self.num_levels,)
    return h.reshape(shape).astype(jnp.float32)

  def __call__(self, x: jax.Array, y: jax.Array | None = None, *, train: bool = False,
               mask_index: int | jax.Array = 0) -> jax.Array:
    """Teacher-forced logits of every dimension under mask `mask_index`.

    Args:
      x: [B, *event_shape] int levels in [0, num_levels).
      y: [B] int labels when class-conditional; ignored otherwise.
      train: unused (MADE has no dropout; the mask is chosen by `mask_index`).
      mask_index: which of the K connectivities, an int or traced int32 in [0, K).

    Returns:
      float32 logits [B, *event_shape] (Bernoulli) or [B, *event_shape, L]; output
      d depends only on dims before d in `ordering(mask_index)`.
    """
    del train
    u = x.astype(jnp.float32) / (self.num_levels - 1)
    return self.network(u, y, mask_index=mask_index)

  def _log_prob_under_mask(self, x: jax.Array, y: jax.Array | None,
                           mask_index: int | jax.Array) -> jax.Array:
    logp = distributions.log_prob(self(x, y, mask_index=mask_index), x)
    return logp.reshape(x.shape[0], -1).sum(axis=-1)

  def log_prob(self, x: jax.Array, y: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """log p(x) (or log p(x | y)) in nats, summed over the D dims.

    train=True: log p(x | mask i) for i uniform in [0, K) from the 'mask' rng (no
    rng needed when K == 1). train=False: the ensemble
    logsumexp_i log p(x | mask i) - log K.

    Args:
      x: [B, *event_shape] int levels in [0, num_levels).
      y: [B] int labels when class-conditional; ignored otherwise.
      train: one random mask (training) or the average of all K (evaluation).

    Returns:
      [B] float32.
    """
    if self.num_masks == 1:
      return self._log_prob_under_mask(x, y, 0)
    if train:
      index = jax.random.randint(self.make_rng('mask'), (), 0, self.num_masks)
      return self._log_prob_under_mask(x, y, index)
    per_mask = jnp.stack([self._log_prob_under_mask(x, y, i) for i in range(self.num_masks)])
    return jax.nn.logsumexp(per_mask, axis=0) - math.log(self.num_masks)


def build(info: 'DatasetInfo', *, dtype: Any = jnp.float32,
          hidden_sizes: tuple[int, ...] = (512, 512), num_masks: int = 1,
          ordering: Literal['natural', 'random'] = 'natural', order_agnostic: bool = False, mask_seed: int = 0,
          conditional: bool = False,
          likelihood: Literal['auto', 'bernoulli', 'categorical'] = 'auto') -> MADE:
  """MADE for `info`'s discrete data.

  Args:
    info: metadata of a discrete dataset.
    dtype: computation dtype.
    hidden_sizes: widths of the hidden layers (each >= 1).
    num_masks: K >= 1 connectivities, trained at random and averaged at evaluation.
    ordering: 'natural' or 'random' (fixed by mask_seed); unused when order_agnostic.
    order_agnostic: draw a random ordering per mask.
    mask_seed: integer >= 0 seeding the masks.
    conditional: condition on the class label (needs a labelled dataset).
    likelihood: 'auto' (Bernoulli for 2 levels, else categorical), 'bernoulli'
      (needs 2 levels) or 'categorical'.
  """
  num_levels = require_levels(info, 'MADE')
  return MADE(
      event_shape=tuple(info.shape), num_levels=num_levels,
      num_classes=condition_classes(info, conditional, 'MADE'), dtype=dtype,
      hidden_sizes=require_positive_sizes('hidden_sizes', hidden_sizes),
      num_masks=require_int('num_masks', num_masks),
      order=require_choice('ordering', ordering, ORDERINGS),
      order_agnostic=require_bool('order_agnostic', order_agnostic),
      mask_seed=require_int('mask_seed', mask_seed, minimum=0),
      likelihood=resolve_likelihood(likelihood, num_levels))
