"""A recurrent autoregressive model: char-RNN over sequences and raster-order images.

The D dims of an example (a text window, or an image flattened in raster order with
its sub-pixels in order) are read one per step by a stack of LSTM (Hochreiter &
Schmidhuber 1997) or GRU (Cho et al. 2014) layers, as in Karpathy's char-rnn and
Graves (2013), "Generating Sequences With Recurrent Neural Networks":

    i_0 = s                                   a learned start input
    i_t = E one_hot(x_{t-1})                  the previous dim, embedded (t >= 1)
    i_t += P pos_t + c[y]                     the next dim's coordinates; the class
    h_t^(1..n) = cells(h_{t-1}^(1..n), i_t)
    logits_t = W h_t^(n)                      p(x_t | x_<t) (Bernoulli or categorical)

With `dropout` > 0, training drops units of the inputs of every layer and of the
head, the non-recurrent connections only (Zaremba et al. 2014, "Recurrent Neural
Network Regularization"), which a char-RNN on a small text needs against overfitting.

so output t depends on x_0 ... x_{t-1} only. pos_t are the normalised coordinates
of dim t itself (`raster_positions`: row and column of the pixel, and the channel
for colour images); telling the network where the pixel it predicts lies improves
raster-order MNIST drastically, so `positions` is on by default.

Cached sampling: `decode` runs one cell step per layer on the dim drawn last and
keeps the recurrent state in the 'cache' collection, so a step costs O(layers), and
its logits equal the teacher-forced ones.
"""

import math
from typing import Any, Literal, TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from dulx.models import check_event_shape, condition_classes, require_bool, require_choice
from dulx.models import require_int, require_levels, require_rate, resolve_likelihood
from dulx.models.autoregressive.base import RasterLogitsModel
from dulx.nn.causal_conv import raster_positions

if TYPE_CHECKING:
  from dulx.data import DatasetInfo

__all__ = ['CELLS', 'RNN', 'build']

CELLS = ('lstm', 'gru')


class RNN(RasterLogitsModel):
  """An LSTM or GRU stack that outputs the conditionals of x in raster order.

  Attributes:
    event_shape: (T,) for sequences or (H, W, C) for images (any shape; flattened).
    num_levels: L, levels per dim.
    num_classes: number of classes when class-conditional, else None.
    dtype: computation dtype (parameters and logits stay float32).
    cell: 'lstm' (flax's OptimizedLSTMCell) or 'gru' (GRUCell).
    num_layers: stacked recurrent layers.
    hidden_size: features of the input embedding and of every layer's state.
    positions: feed the next dim's normalised coordinates at every step.
    dropout: rate of dropout on the non-recurrent connections in training.
    likelihood: 'bernoulli' (one logit per dim, L == 2) or 'categorical'.
  """
  event_shape: tuple[int, ...]
  num_levels: int
  num_classes: int | None = None
  dtype: Any = jnp.float32
  cell: str = 'lstm'
  num_layers: int = 1
  hidden_size: int = 256
  positions: bool = True
  dropout: float = 0.0
  likelihood: str = 'categorical'

  @property
  def num_dims(self) -> int:
    return math.prod(self.event_shape)

  def _check(self, y: jax.Array | None) -> None:
    if self.cell not in CELLS:
      raise ValueError(f'cell must be one of {", ".join(CELLS)}, got {self.cell!r}.')
    if self.likelihood == 'bernoulli' and self.num_levels != 2:
      raise ValueError(f'a Bernoulli RNN needs num_levels == 2, got {self.num_levels}.')
    if self.num_classes is not None and y is None:
      raise ValueError('this RNN is class-conditional: pass labels y [B].')

  def _layer(self, i: int) -> nn.RNN:
    """Layer i: flax's nn.RNN (a scan) over cell `<cell>{i}`, whose parameters live here.

    `network` and `decode` build it alike, so they share the cell's parameters.
    """
    cell_type = nn.OptimizedLSTMCell if self.cell == 'lstm' else nn.GRUCell
    return nn.RNN(cell_type(self.hidden_size, dtype=self.dtype, name=f'{self.cell}{i}'),
                  name=f'layer{i}')

  def _embed(self, e: jax.Array) -> jax.Array:
    """E e: codes [..., L] -> [..., hidden] (an embedding when e is one-hot)."""
    return nn.Dense(self.hidden_size, use_bias=False, dtype=self.dtype, name='embed')(
        e.astype(self.dtype))

  def _start(self) -> jax.Array:
    """s [hidden]: the input of step 0, which has no previous dim."""
    return self.param('start', nn.initializers.normal(1.0), (self.hidden_size,)).astype(self.dtype)

  def _context(self, pos: jax.Array, y: jax.Array | None) -> jax.Array:
    """P pos + c[y] (or 0): [..., hidden] from pos [..., P] and y [B]."""
    out = jnp.zeros((), self.dtype)
    if self.positions and pos.shape[-1]:
      out = out + nn.Dense(self.hidden_size, use_bias=False, dtype=self.dtype,
                           name='position_proj')(pos.astype(self.dtype))
    if self.num_classes is not None:
      bias = nn.Embed(self.num_classes, self.hidden_size, name='class_embed')(y).astype(self.dtype)
      out = out + bias.reshape(bias.shape[0], *([1] * (pos.ndim - 2)), -1)
    return out

  def _head(self, h: jax.Array) -> jax.Array:
    """W h: [..., hidden] -> float32 logits [...] (Bernoulli) or [..., L]."""
    logits = nn.Dense(1 if self.likelihood == 'bernoulli' else self.num_levels,
                      dtype=self.dtype, name='head')(h).astype(jnp.float32)
    return logits[..., 0] if self.likelihood == 'bernoulli' else logits

  @nn.compact
  def network(self, u: jax.Array, y: jax.Array | None = None, *,
              train: bool = False) -> jax.Array:
    """The recurrent network on real-valued codes (differentiable in u).

    Args:
      u: [B, *event_shape, L] float codes of the dims; one_hot(x, L) for data.
      y: [B] int labels when class-conditional; ignored otherwise.
      train: apply dropout (draws from the 'dropout' rng stream).

    Returns:
      float32 logits [B, *event_shape] (Bernoulli) or [B, *event_shape, L]; those of
      dim t depend only on u at dims < t.
    """
    if u.shape[1:] != (*self.event_shape, self.num_levels):
      raise ValueError(f'codes have shape {u.shape}; expected '
                       f'[B, {", ".join(map(str, self.event_shape))}, {self.num_levels}].')
    self._check(y)
    batch = u.shape[0]
    embedded = self._embed(u.reshape(batch, self.num_dims, self.num_levels))
    start = jnp.broadcast_to(self._start(), (batch, 1, self.hidden_size))
    h = jnp.concatenate([start, embedded[:, :-1]], axis=1)  # Step t reads dim t - 1.
    h = h + self._context(jnp.asarray(raster_positions(self.event_shape))[None], y)
    drop = nn.Dropout(self.dropout, deterministic=not train)
    for i in range(self.num_layers):
      h = self._layer(i)(drop(h))
    logits = self._head(drop(h))
    return logits.reshape(batch, *self.event_shape, *logits.shape[2:])

  def __call__(self, x: jax.Array, y: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """Teacher-forced logits of every dim.

    Args:
      x: [B, *event_shape] int levels in [0, num_levels).
      y: [B] int labels when class-conditional; ignored otherwise.
      train: apply dropout (draws from the 'dropout' rng stream).

    Returns:
      float32 logits [B, *event_shape] (Bernoulli) or [B, *event_shape, L].
    """
    check_event_shape(x, self.event_shape)
    return self.network(jax.nn.one_hot(x, self.num_levels, dtype=self.dtype), y, train=train)

  @nn.compact
  def decode(self, x: jax.Array, t: int | jax.Array, y: jax.Array | None = None) -> jax.Array:
    """The logits of dim t from the cached recurrent state: one step of cached sampling.

    Applied with mutable=['cache'] at t = 0, 1, ..., D - 1 in turn (the call at t = 0
    creates the state, zeros as in `network`). Step t feeds x_{t-1} (the start input
    at t = 0) through one cell step per layer.

    Args:
      x: [B, *event_shape] int levels; the dims before t are drawn, the rest unread.
      t: the step (int or traced int32 scalar) in [0, D).
      y: [B] int labels when class-conditional.

    Returns:
      float32 logits of dim t: [B, 1] (Bernoulli) or [B, 1, L] (categorical).
    """
    check_event_shape(x, self.event_shape)
    self._check(y)
    batch = x.shape[0]
    flat = x.reshape(batch, self.num_dims)
    previous = jax.lax.dynamic_index_in_dim(flat, jnp.maximum(t - 1, 0), axis=1, keepdims=False)
    embedded = self._embed(jax.nn.one_hot(previous, self.num_levels))
    h = jnp.where(t > 0, embedded, self._start()[None])
    pos = jax.lax.dynamic_index_in_dim(jnp.asarray(raster_positions(self.event_shape)), t,
                                       keepdims=False)
    h = (h + self._context(pos[None], y))[:, None]  # [B, 1, hidden]: a sequence of one step.
    for i in range(self.num_layers):
      layer = self._layer(i)
      # float32 zeros, as the cells' own initialize_carry makes for `network`.
      zeros = lambda: jnp.zeros((batch, self.hidden_size), jnp.float32)
      state = self.variable('cache', f'state{i}',
                            lambda: (zeros(), zeros()) if self.cell == 'lstm' else zeros())
      state.value, h = layer(h, initial_carry=state.value, return_carry=True)
    return self._head(h)


def build(info: 'DatasetInfo', *, dtype: Any = jnp.float32,
          cell: Literal['lstm', 'gru'] = 'lstm', num_layers: int = 1, hidden_size: int = 256,
          positions: bool = True, dropout: float = 0.0, conditional: bool = False,
          likelihood: Literal['auto', 'bernoulli', 'categorical'] = 'auto') -> RNN:
  """A recurrent autoregressive model for `info`'s discrete sequences or images.

  Args:
    info: metadata of a discrete dataset (text windows (T,) or images (H, W, C)).
    dtype: computation dtype.
    cell: the recurrent cell: 'lstm' or 'gru'.
    num_layers: stacked recurrent layers (>= 1).
    hidden_size: features of the embedding and of every layer's state (>= 1).
    positions: feed the normalised coordinates of the dim being predicted (step; or
      row, column and channel) at every step.
    dropout: dropout rate in [0, 1) on the inputs of every layer and of the head,
      in training only.
    conditional: condition on the class label (needs a labelled dataset).
    likelihood: 'auto' (Bernoulli for 2 levels, else categorical), 'bernoulli'
      (needs 2 levels) or 'categorical'.
  """
  num_levels = require_levels(info, 'RNN')
  return RNN(
      event_shape=tuple(info.shape), num_levels=num_levels,
      num_classes=condition_classes(info, conditional, 'RNN'), dtype=dtype,
      cell=require_choice('cell', cell, CELLS),
      num_layers=require_int('num_layers', num_layers),
      hidden_size=require_int('hidden_size', hidden_size),
      positions=require_bool('positions', positions), dropout=require_rate('dropout', dropout),
      likelihood=resolve_likelihood(likelihood, num_levels))
