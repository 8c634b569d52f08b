"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders").

Two stacks replace PixelCNN's masked convolutions (`dulx.nn.gated`): a vertical stack
that sees the rows above and a horizontal stack that sees the current row up to the
pixel, joined so that the receptive field has no blind spot. Gated layer l (of N):

    a_v = VConv_l(v)                                     vertical, rows <= h, 2F features
    a_h = HConv_l(h) + Link_l(down_shift(a_v))           horizontal + rows < h
    v   = gate(a_v + E^v_l[y])                           (not needed after the last layer)
    g   = gate(a_h + E^h_l[y])                           gate(a) = tanh(a_f) * sigmoid(a_g)
    h   = Out_l(g) (+ h for l > 0)                       1x1, residual (not after the last)
    s   = s + Skip_l(g)                                  1x1, skip connection to the head
    logits = Head2(relu(Head1(relu(s))))                 1x1, 1x1 -> C * (1 or L)

The inputs of layer 0 are both u = x / (L - 1) - 1/2; its kernel is k_0 x k_0
(`first_kernel_size`, mask 'A' at the pixel itself), later ones k x k (mask 'B').
For RGB every horizontal-stack feature map is split into C groups (R < G < B) and
every 1x1 convolution of the horizontal stack is channel masked (mask 'B'), so the
logits of channel c at (h, w) see channels < c of (h, w) and every channel of earlier
pixels. Class-conditional (num_classes set): E^v_l[y] and E^h_l[y] are learned
per-class biases of the pre-activations (the paper's V^T h with h a one-hot label).

Fast sampling (Ramachandran et al. 2017, "Fast Generation for Convolutional
Autoregressive Models"): `decode(x, t, y)` computes the logits of dimension t from
caches of what earlier steps computed. When a row starts, every vertical layer's
output row above it is computed once from the last k // 2 + 1 input rows it keeps,
and the links to the horizontal stack for the whole new row are stored; each step
then runs the horizontal stack at one pixel from its per-layer row buffers, an
O(N * k) cost instead of a full pass over the image.
"""

from typing import Any, Literal, TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from dulx.errors import ConfigError
from dulx.models import check_event_shape, condition_classes, require_choice, require_int
from dulx.models import require_levels, resolve_likelihood
from dulx.models.autoregressive.base import RasterLogitsModel
from dulx.nn.gated import HorizontalConv, VerticalConv, gate
from dulx.nn.masked_conv import IMPLS, MaskedConv2D
from dulx.nn.shifted_conv import down_shift

if TYPE_CHECKING:
  from dulx.data import DatasetInfo

__all__ = ['GatedPixelCNN', 'build']


class GatedPixelCNN(RasterLogitsModel):
  """The Gated PixelCNN of van den Oord et al. (2016) over images of discrete levels.

  Attributes:
    event_shape: (H, W, C) of one image.
    num_levels: L, levels per sub-pixel.
    num_classes: number of classes when class-conditional, else None.
    dtype: computation dtype (parameters and logits stay float32).
    num_layers: N, gated layers.
    channels: F, features of each stack (a gated unit's pre-activation has 2F).
    skip_channels: features of each layer's skip connection (summed into the head).
    head_channels: features of the head's hidden 1x1 layer.
    first_kernel_size: odd k_0 of layer 0.
    kernel_size: odd k of the later layers.
    likelihood: 'bernoulli' (one logit per sub-pixel, L == 2) or 'categorical'.
    conv_impl: convolution implementation: 'auto', 'xla' or 'taps'.
  """
  event_shape: tuple[int, ...]
  num_levels: int
  num_classes: int | None = None
  dtype: Any = jnp.float32
  num_layers: int = 10
  channels: int = 64
  skip_channels: int = 64
  head_channels: int = 64
  first_kernel_size: int = 7
  kernel_size: int = 3
  likelihood: str = 'categorical'
  conv_impl: str = 'auto'

  def setup(self):
    channels = self.event_shape[-1]
    features = 2 * self.channels
    per_channel = 1 if self.likelihood == 'bernoulli' else self.num_levels

    def masked_1x1(out, name):
      return MaskedConv2D(out, 1, 'B', data_channels=channels, dtype=self.dtype,
                          impl=self.conv_impl, name=name)

    def class_bias(name):
      if self.num_classes is None:
        return None
      return nn.Embed(self.num_classes, features, embedding_init=nn.initializers.zeros_init(),
                      name=name)

    kernels = [self.first_kernel_size] + [self.kernel_size] * (self.num_layers - 1)
    self.vertical = [VerticalConv(features, k, dtype=self.dtype, impl=self.conv_impl,
                                  name=f'layer{l}_vertical') for l, k in enumerate(kernels)]
    self.horizontal = [
        HorizontalConv(features, k, 'A' if l == 0 else 'B', data_channels=channels, num_splits=2,
                       dtype=self.dtype, impl=self.conv_impl, name=f'layer{l}_horizontal')
        for l, k in enumerate(kernels)]
    self.link = [nn.Dense(features, dtype=self.dtype, name=f'layer{l}_link')
                 for l in range(self.num_layers)]
    # The last layer's vertical gate and horizontal output would feed nothing: it has
    # only a skip connection, and no vertical class bias.
    self.out = [masked_1x1(self.channels, f'layer{l}_out') for l in range(self.num_layers - 1)]
    self.skip = [masked_1x1(self.skip_channels, f'layer{l}_skip') for l in range(self.num_layers)]
    self.vertical_class_bias = [class_bias(f'layer{l}_vertical_class_bias')
                                for l in range(self.num_layers - 1)]
    self.horizontal_class_bias = [class_bias(f'layer{l}_horizontal_class_bias')
                                  for l in range(self.num_layers)]
    self.head_hidden = masked_1x1(self.head_channels, 'head_hidden')
    self.head_out = masked_1x1(channels * per_channel, 'head_out')

  def _check(self, x: jax.Array, y: jax.Array | None) -> None:
    check_event_shape(x, self.event_shape)
    if self.likelihood == 'bernoulli' and self.num_levels != 2:
      raise ValueError(f'a Bernoulli Gated PixelCNN needs num_levels == 2, got {self.num_levels}.')
    if self.num_classes is not None and y is None:
      raise ValueError('this Gated PixelCNN is class-conditional: pass labels y [B].')

  def _class_bias(self, embed: nn.Embed | None, y: jax.Array | None,
                  rank: int) -> jax.Array | float:
    """E[y] broadcast to a [B, 1, ..., 1, 2F] of the given rank, or 0 when unconditional."""
    if embed is None:
      return 0.0
    return embed(y).astype(self.dtype).reshape(y.shape[0], *[1] * (rank - 2), -1)

  def _gated_layer(self, l: int, a_h: jax.Array, h: jax.Array | None,
                   y: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """The horizontal stack's gate, residual and skip at [B, H', W', .] positions.

    a_h: the pre-activation HConv_l(h) + Link_l(.) of layer l; h: the layer's input
    (None for layer 0, which has no residual). Returns (new h, skip term); the new h
    is None after the last layer.
    """
    g = gate(a_h + self._class_bias(self.horizontal_class_bias[l], y, a_h.ndim))
    skip = self.skip[l](g)
    if l == self.num_layers - 1:
      return None, skip
    out = self.out[l](g)
    return (out if h is None else h + out), skip

  def _head(self, skip: jax.Array) -> jax.Array:
    """[B, H', W', skip_channels] skip sum -> float32 logits [B, H', W', C(, L)]."""
    s = self.head_hidden(nn.relu(skip))
    logits = self.head_out(nn.relu(s))
    if self.likelihood == 'categorical':
      logits = logits.reshape(*logits.shape[:-1], self.event_shape[-1], self.num_levels)
    return logits.astype(jnp.float32)

  def network(self, u: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """The two-stack network on real-valued inputs (differentiable in u).

    Args:
      u: [B, H, W, C] float inputs; levels enter as x / (L - 1) in [0, 1].
      y: [B] int labels in [0, num_classes) when class-conditional; ignored otherwise.

    Returns:
      float32 logits [B, H, W, C] (Bernoulli) or [B, H, W, C, L] (categorical);
      the logits of (h, w, c) depend only on u at positions earlier in `ordering()`.
    """
    self._check(u, y)
    v = u.astype(self.dtype) - 0.5
    h, skip = None, 0.0
    for l in range(self.num_layers):
      a_v = self.vertical[l](v)
      a_h = self.horizontal[l](v if h is None else h) + self.link[l](down_shift(a_v))
      h, s = self._gated_layer(l, a_h, h, y)
      skip = skip + s
      if l < self.num_layers - 1:
        v = gate(a_v + self._class_bias(self.vertical_class_bias[l], y, 4))
    return self._head(skip)

  def __call__(self, x: jax.Array, y: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """Teacher-forced logits of every sub-pixel.

    Args:
      x: [B, H, W, C] int levels in [0, num_levels).
      y: [B] int labels when class-conditional; ignored otherwise.
      train: unused (no dropout).

    Returns:
      float32 logits [B, H, W, C] (Bernoulli) or [B, H, W, C, L] (categorical).
    """
    del train
    return self.network(x.astype(jnp.float32) / (self.num_levels - 1), y)

  @nn.compact
  def decode(self, x: jax.Array, t: int | jax.Array, y: jax.Array | None = None) -> jax.Array:
    """The logits of dimension t from the caches: one step of cached sampling.

    Applied with mutable=['cache'] at t = 0, 1, ..., D - 1 in turn (the call at t = 0
    creates the cache) on the partly drawn x; equals the teacher-forced logits of
    dimension t. Step t is pixel (i, j) = divmod(t // C, W), channel c = t % C.

    The cache holds, per layer l >= 1, the last k // 2 + 1 rows of the vertical
    stack's input (`vertical_rows{l}`, zero padded) and the current row of the
    horizontal stack's input (`horizontal_row{l}`); per layer, the current row's
    link Link_l(down_shift(a_v)) (`link{l}`). Layer 0 reads x itself. When a row
    i > 0 starts, row i - 1 of every vertical layer is computed (`nn.cond`, so only
    then); every step recomputes the horizontal stack at (i, j), whose features at
    a pixel do not depend on its last channel, so the final write is exact.

    Args:
      x: [B, H, W, C] int levels; the dims of steps < t are drawn, the rest are unread
        (or masked out).
      t: step index in [0, H * W * C).
      y: [B] int labels when class-conditional.

    Returns:
      float32 logits of dimension t: [B, 1] (Bernoulli) or [B, 1, L] (categorical).
    """
    self._check(x, y)
    _, width, channels = self.event_shape
    batch = x.shape[0]
    pixel, c = jnp.divmod(t, channels)
    i, j = jnp.divmod(pixel, width)
    u = (x.astype(jnp.float32) / (self.num_levels - 1)).astype(self.dtype) - 0.5
    k0, k = self.first_kernel_size // 2, self.kernel_size // 2
    for l in range(1, self.num_layers):
      self.variable('cache', f'vertical_rows{l}', jnp.zeros,
                    (batch, k + 1, width + 2 * k, self.channels), self.dtype)
    horizontal_rows = [None] + [
        self.variable('cache', f'horizontal_row{l}', jnp.zeros,
                      (batch, 1, width + k, self.channels), self.dtype)
        for l in range(1, self.num_layers)]
    # Row 0 links the zero row that down_shift puts above the image.
    links = [self.variable('cache', f'link{l}',
                           lambda l=l: self.link[l](jnp.zeros((batch, 1, width, 2 * self.channels),
                                                              self.dtype)))
             for l in range(self.num_layers)]

    def start_row(module, u, y, i):
      """Vertical rows i - 1 of every layer from their input windows; the links of row i."""
      padded = jnp.pad(u, ((0, 0), (k0, 0), (k0, k0), (0, 0)))
      window = jax.lax.dynamic_slice_in_dim(padded, i - 1, k0 + 1, axis=1)
      for l in range(module.num_layers):
        a_v = module.vertical[l].window(window)  # [B, 1, W, 2F]: row i - 1.
        module.variable('cache', f'link{l}').value = module.link[l](a_v)
        if l < module.num_layers - 1:
          v = gate(a_v + module._class_bias(module.vertical_class_bias[l], y, 4))
          rows = module.variable('cache', f'vertical_rows{l + 1}')
          new_row = jnp.pad(v, ((0, 0), (0, 0), (k, k), (0, 0)))
          rows.value = jnp.concatenate([rows.value[:, 1:], new_row], axis=1)
          window = rows.value

    nn.cond((c == 0) & (j == 0) & (i > 0), start_row, lambda *_: None, self, u, y, i)

    row = jax.lax.dynamic_slice_in_dim(u, i, 1, axis=1)
    window = jax.lax.dynamic_slice_in_dim(jnp.pad(row, ((0, 0), (0, 0), (k0, 0), (0, 0))),
                                          j, k0 + 1, axis=2)  # [B, 1, k0 + 1, C]
    h, skip = None, 0.0
    for l in range(self.num_layers):
      if l > 0:
        buffer = horizontal_rows[l]
        buffer.value = jax.lax.dynamic_update_slice_in_dim(buffer.value, h, j + k, axis=2)
        window = jax.lax.dynamic_slice_in_dim(buffer.value, j, k + 1, axis=2)
      link = jax.lax.dynamic_slice_in_dim(links[l].value, j, 1, axis=2)
      a_h = self.horizontal[l].window(window) + link  # [B, 1, 1, 2F]
      h, s = self._gated_layer(l, a_h, h, y)
      skip = skip + s
    logits = self._head(skip)[:, 0, 0]  # [B, C(, L)]
    return jax.lax.dynamic_slice_in_dim(logits, c, 1, axis=1)


def build(info: 'DatasetInfo', *, dtype: Any = jnp.float32, num_layers: int = 10,
          channels: int = 64, skip_channels: int = 64, head_channels: int = 64,
          first_kernel_size: int = 7,
          kernel_size: int = 3, conditional: bool = False,
          likelihood: Literal['auto', 'bernoulli', 'categorical'] = 'auto',
          conv_impl: Literal['auto', 'xla', 'taps'] = 'auto') -> GatedPixelCNN:
  """Gated PixelCNN for `info`'s discrete images.

  Args:
    info: metadata of a discrete image dataset, examples of shape (H, W, C).
    dtype: computation dtype.
    num_layers: gated layers (>= 1).
    channels: features of each stack (>= C, the image channels).
    skip_channels: features of each layer's skip connection to the head (>= C).
    head_channels: features of the output head's hidden layer (>= C).
    first_kernel_size: odd size (>= 3) of the first layer's kernel.
    kernel_size: odd size (>= 1) of the later layers' kernels.
    conditional: condition on the class label (needs a labelled dataset).
    likelihood: 'auto' (Bernoulli for 2 levels, else categorical), 'bernoulli'
      (needs 2 levels) or 'categorical'.
    conv_impl: convolution implementation: 'auto' (per backend), 'xla' (lax
      convolution) or 'taps' (one matmul per kernel tap).
  """
  if len(info.shape) != 3:
    raise ConfigError(f'Gated PixelCNN models images of shape (H, W, C), but {info.spec!r} has '
                      f'examples of shape {tuple(info.shape)}.')
  num_levels = require_levels(info, 'Gated PixelCNN')
  channels_in = info.shape[-1]
  likelihood = resolve_likelihood(likelihood, num_levels)
  first_kernel_size = require_int('first_kernel_size', first_kernel_size, minimum=3)
  kernel_size = require_int('kernel_size', kernel_size, minimum=1)
  for name, size in (('first_kernel_size', first_kernel_size), ('kernel_size', kernel_size)):
    if size % 2 == 0:
      raise ConfigError(f'--{name} must be odd, got {size}.')
  return GatedPixelCNN(
      event_shape=tuple(info.shape), num_levels=num_levels,
      num_classes=condition_classes(info, conditional, 'Gated PixelCNN'), dtype=dtype,
      num_layers=require_int('num_layers', num_layers, minimum=1),
      channels=require_int('channels', channels, minimum=channels_in),
      skip_channels=require_int('skip_channels', skip_channels, minimum=channels_in),
      head_channels=require_int('head_channels', head_channels, minimum=channels_in),
      first_kernel_size=first_kernel_size, kernel_size=kernel_size, likelihood=likelihood,
      conv_impl=require_choice('conv_impl', conv_impl, IMPLS))
