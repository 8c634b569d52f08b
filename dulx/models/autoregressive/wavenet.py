"""WaveNet (van den Oord et al. 2016, "WaveNet: A Generative Model for Raw Audio").

An autoregressive model over a sequence of D discrete dims (a text window, or an
image flattened in raster order with its sub-pixels in order), built from dilated
causal convolutions (`dulx.nn.causal_conv`):

    e_t = one_hot(x_t)                                                    [D, L]
    h = CausalConv[k0](shift_right(e))           sees x_{t-k0} ... x_{t-1}, not x_t
    for l = 0 .. S * N - 1, dilation d_l = 2^(l mod N) (S stacks of N layers):
      a = CausalConv[k, d_l](h) + V_l pos_t + c_l[y]                      [D, 2R]
      z = tanh(a_f) * sigmoid(a_g)                 the gated unit (paper Eq. 2)
      skip += W_skip,l z ;  h = h + W_res,l z      residual and skip paths (Fig. 4)
    logits = W_2 relu(W_1 relu(skip))

Output t depends on x_{t-R} ... x_{t-1}, R = k0 + (k - 1) sum_l d_l (the receptive
field). pos_t are the normalised coordinates of dim t itself (`raster_positions`:
row and column of the pixel, and the channel for colour images), a local
conditioning input (paper Sec. 2.5): they are known before x_t is drawn, so they
may enter output t directly and tell a model of flattened images where in the
image it is. Class-conditional models add a learned bias c_l[y] per layer (global
conditioning). With `dropout` > 0, training drops units of every gated output z.

Cached sampling (Paine et al. 2016, "Fast Wavenet Generation Algorithm"): `decode`
feeds the one dim drawn last through every layer, each keeping its last
(k - 1) d_l inputs in a queue in the 'cache' collection, so a step costs O(layers)
instead of a whole pass over D dims; it returns exactly the teacher-forced logits.
"""

import math
from typing import Any, Literal, TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from dulx.models import check_event_shape, condition_classes, require_bool, require_int
from dulx.models import require_levels, require_rate, resolve_likelihood
from dulx.models.autoregressive.base import RasterLogitsModel
from dulx.nn.causal_conv import CausalConv1D, raster_positions, shift_right
from dulx.nn.gated import gate

if TYPE_CHECKING:
  from dulx.data import DatasetInfo

__all__ = ['WaveNet', 'build']


class WaveNet(RasterLogitsModel):
  """WaveNet over D = prod(event_shape) discrete dims in raster order.

  Attributes:
    event_shape: (T,) for sequences or (H, W, C) for images.
    num_levels: L, levels per dim.
    num_classes: number of classes when class-conditional, else None.
    dtype: computation dtype (parameters and logits stay float32).
    num_stacks: S, repetitions of the dilation cycle.
    layers_per_stack: N, layers per cycle, dilations 1, 2, ..., 2^(N-1).
    kernel_size: k >= 2, taps of the dilated convolutions.
    first_kernel_size: k0 >= 1, taps of the first (shifted) convolution.
    residual_channels: R, features of the residual path.
    skip_channels: features of the skip path and the output head.
    positions: feed each dim's coordinates (`raster_positions`) to every layer.
    dropout: rate of dropout on the gated units in training.
    likelihood: 'bernoulli' (one logit per dim, L == 2) or 'categorical'.
  """
  event_shape: tuple[int, ...]
  num_levels: int
  num_classes: int | None = None
  dtype: Any = jnp.float32
  num_stacks: int = 2
  layers_per_stack: int = 6
  kernel_size: int = 2
  first_kernel_size: int = 2
  residual_channels: int = 32
  skip_channels: int = 64
  positions: bool = True
  dropout: float = 0.0
  likelihood: str = 'categorical'

  @property
  def num_dims(self) -> int:
    return math.prod(self.event_shape)

  @property
  def dilations(self) -> tuple[int, ...]:
    """d_l = 2^(l mod N) for l = 0 .. S N - 1."""
    return tuple(2**i for _ in range(self.num_stacks) for i in range(self.layers_per_stack))

  @property
  def receptive_field(self) -> int:
    """R: output t sees x_{t-R} ... x_{t-1}."""
    return self.first_kernel_size + (self.kernel_size - 1) * sum(self.dilations)

  def setup(self):
    r, dense = self.residual_channels, lambda f, name, **kw: nn.Dense(f, dtype=self.dtype,
                                                                      name=name, **kw)
    self.input_conv = CausalConv1D(r, self.first_kernel_size, dtype=self.dtype)
    self.dilated = [CausalConv1D(2 * r, self.kernel_size, d, dtype=self.dtype, name=f'dilated{l}')
                    for l, d in enumerate(self.dilations)]
    num_layers = len(self.dilations)
    if self.positions:
      self.position_proj = [dense(2 * r, f'position_proj{l}', use_bias=False)
                            for l in range(num_layers)]
    if self.num_classes is not None:
      self.class_bias = [nn.Embed(self.num_classes, 2 * r, embedding_init=nn.initializers.zeros_init(),
                                  name=f'class_bias{l}') for l in range(num_layers)]
    # The last layer's residual output would feed nothing: it has a skip path only.
    self.residual = [dense(r, f'residual{l}') for l in range(num_layers - 1)]
    self.skip = [dense(self.skip_channels, f'skip{l}') for l in range(num_layers)]
    self.head_hidden = dense(self.skip_channels, 'head_hidden')
    self.head_out = dense(1 if self.likelihood == 'bernoulli' else self.num_levels, 'head_out')
    self.drop = nn.Dropout(self.dropout)

  def _check(self, y: jax.Array | None) -> None:
    if self.likelihood == 'bernoulli' and self.num_levels != 2:
      raise ValueError(f'a Bernoulli WaveNet needs num_levels == 2, got {self.num_levels}.')
    if self.num_classes is not None and y is None:
      raise ValueError('this WaveNet is class-conditional: pass labels y [B].')

  def _conditioning(self, l: int, pos: jax.Array, y: jax.Array | None) -> jax.Array:
    """V_l pos + c_l[y]: [..., 2R] from pos [..., P] (P may be 0) and y [B]."""
    out = jnp.zeros((), self.dtype)
    if self.positions and pos.shape[-1]:
      out = out + self.position_proj[l](pos.astype(self.dtype))
    if self.num_classes is not None:
      bias = self.class_bias[l](y).astype(self.dtype)
      out = out + bias.reshape(bias.shape[0], *([1] * (pos.ndim - 2)), -1)
    return out

  def _layers(self, h: jax.Array, conv, pos: jax.Array, y: jax.Array | None,
              train: bool = False) -> jax.Array:
    """The residual stack and head on h [B, ..., R] -> float32 logits [B, ..., 1 or L]."""
    skip = 0.0
    for l in range(len(self.dilations)):
      z = gate(conv(l, h) + self._conditioning(l, pos, y))
      z = self.drop(z, deterministic=not train)
      skip = skip + self.skip[l](z)
      if l < len(self.residual):
        h = h + self.residual[l](z)
    return self.head_out(nn.relu(self.head_hidden(nn.relu(skip)))).astype(jnp.float32)

  def _shape_logits(self, logits: jax.Array) -> jax.Array:
    """[B, n, 1 or L] -> [B, n] (Bernoulli) or [B, n, L]."""
    return logits[..., 0] if self.likelihood == 'bernoulli' else logits

  def network(self, u: jax.Array, y: jax.Array | None = None, *,
              train: bool = False) -> jax.Array:
    """The causal network on real-valued codes (differentiable in u).

    Args:
      u: [B, *event_shape, L] float codes of the dims; one_hot(x, L) for data.
      y: [B] int labels when class-conditional; ignored otherwise.
      train: apply dropout (draws from the 'dropout' rng stream).

    Returns:
      float32 logits [B, *event_shape] (Bernoulli) or [B, *event_shape, L]; those of
      dim t depend only on u at dims t - R ... t - 1.
    """
    if u.shape[1:] != (*self.event_shape, self.num_levels):
      raise ValueError(f'codes have shape {u.shape}; expected '
                       f'[B, {", ".join(map(str, self.event_shape))}, {self.num_levels}].')
    self._check(y)
    batch = u.shape[0]
    e = u.reshape(batch, self.num_dims, self.num_levels).astype(self.dtype)
    h = self.input_conv(shift_right(e))
    pos = jnp.asarray(raster_positions(self.event_shape))[None]
    logits = self._shape_logits(self._layers(h, lambda l, h: self.dilated[l](h), pos, y, train))
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

  def decode(self, x: jax.Array, t: int | jax.Array, y: jax.Array | None = None) -> jax.Array:
    """The logits of dim t from the layers' queues: one step of cached sampling.

    Applied with mutable=['cache'] at t = 0, 1, ..., D - 1 in turn (the call at t = 0
    creates the queues). Step t feeds x_{t-1} (zeros at t = 0: the shift) through
    every layer's cached step and equals the teacher-forced logits of dim t.

    Args:
      x: [B, *event_shape] int levels; the dims before t are drawn, the rest unread.
      t: the step (int or traced int32 scalar) in [0, D).
      y: [B] int labels when class-conditional.

    Returns:
      float32 logits of dim t: [B, 1] (Bernoulli) or [B, 1, L] (categorical).
    """
    check_event_shape(x, self.event_shape)
    self._check(y)
    flat = x.reshape(x.shape[0], self.num_dims)
    previous = jax.lax.dynamic_index_in_dim(flat, jnp.maximum(t - 1, 0), axis=1, keepdims=False)
    e = jax.nn.one_hot(previous, self.num_levels, dtype=self.dtype) * (t > 0)
    h = self.input_conv.decode(e, t)
    pos = jax.lax.dynamic_index_in_dim(jnp.asarray(raster_positions(self.event_shape)), t,
                                       keepdims=False)[None]
    logits = self._layers(h, lambda l, h: self.dilated[l].decode(h, t), pos, y)
    return self._shape_logits(logits[:, None])


def build(info: 'DatasetInfo', *, dtype: Any = jnp.float32, num_stacks: int = 2,
          layers_per_stack: int = 6, kernel_size: int = 2, first_kernel_size: int = 2,
          residual_channels: int = 32, skip_channels: int = 64, positions: bool = True,
          dropout: float = 0.0, conditional: bool = False,
          likelihood: Literal['auto', 'bernoulli', 'categorical'] = 'auto') -> WaveNet:
  """WaveNet for `info`'s discrete sequences or images (flattened in raster order).

  Args:
    info: metadata of a discrete dataset (text windows (T,) or images (H, W, C)).
    dtype: computation dtype.
    num_stacks: repetitions (>= 1) of the dilation cycle 1, 2, 4, ...
    layers_per_stack: layers (>= 1) per cycle; the last has dilation 2^(n - 1).
    kernel_size: taps (>= 2) of the dilated convolutions.
    first_kernel_size: taps (>= 1) of the first convolution, which excludes the
      current dim.
    residual_channels: features of the residual path (>= 1).
    skip_channels: features of the skip path and output head (>= 1).
    positions: feed each dim's normalised coordinates (step; or row, column and
      channel) to every layer.
    dropout: dropout rate in [0, 1) on the gated units, in training only.
    conditional: condition on the class label (needs a labelled dataset).
    likelihood: 'auto' (Bernoulli for 2 levels, else categorical), 'bernoulli'
      (needs 2 levels) or 'categorical'.
  """
  num_levels = require_levels(info, 'WaveNet')
  return WaveNet(
      event_shape=tuple(info.shape), num_levels=num_levels,
      num_classes=condition_classes(info, conditional, 'WaveNet'), dtype=dtype,
      num_stacks=require_int('num_stacks', num_stacks),
      layers_per_stack=require_int('layers_per_stack', layers_per_stack),
      kernel_size=require_int('kernel_size', kernel_size, minimum=2),
      first_kernel_size=require_int('first_kernel_size', first_kernel_size),
      residual_channels=require_int('residual_channels', residual_channels),
      skip_channels=require_int('skip_channels', skip_channels),
      positions=require_bool('positions', positions), dropout=require_rate('dropout', dropout),
      likelihood=resolve_likelihood(likelihood, num_levels))
