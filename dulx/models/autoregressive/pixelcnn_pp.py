"""PixelCNN++ (Salimans et al. 2017, "PixelCNN++: Improving the PixelCNN with
Discretized Logistic Mixture Likelihood and Other Modifications").

The network maps the pixels before (h, w) in raster order to the parameters of a
discretized logistic mixture over all C channels of pixel (h, w) jointly
(`dulx.distributions.logistic_mixture`; the channels share one component and are
coupled linearly, Sec. 2.1-2.2), so the model is autoregressive over *pixels*: it
draws a pixel's C channels in one step (`dims_per_step = C`).

Architecture (Sec. 2.3-2.4, Fig. 2), with two causal streams of shifted convolutions
(`dulx.nn.shifted_conv`): u, the vertical stream (2x3 'down' convolutions: rows
strictly above), and ul, the horizontal stream (2x2 'down-right': also the current
row to the left), which together see every earlier pixel (no blind spot):

    h  = [2 x / (L - 1) - 1, 1]                        (a ones channel marks the padding)
    u  = down_shift(Conv_down[2x3](h))
    ul = down_shift(Conv_down[1x3](h)) + right_shift(Conv_down_right[2x1](h))
    up pass, num_scales scales, each (but the first) opened by a stride-2 convolution:
      num_resnet x ( u = G_down(u);  ul = G_down_right(ul, a = u) )   every map kept
    down pass, from the coarsest scale, each (but the coarsest) opened by a stride-2
    transposed convolution and one block more, to use the up pass's maps in reverse:
      u = G_down(u, a = kept u);  ul = G_down_right(ul, a = [u, kept ul])
    params = NiN(elu(ul))                              -> K (1 + 2C + C(C-1)/2)

The gated resnet block (Sec. 2.5 dropout, and the gated units of Gated PixelCNN):

    G(x, a) = x + A * sigmoid(B),  [A, B] = Conv(dropout(concat_elu(Conv(concat_elu(x))
                                                              + NiN(concat_elu(a))))) + V y

concat_elu(x) = elu([x, -x]); V y is a learned per-class bias when class-conditional.
The paper's weight normalisation and data-dependent initialisation are replaced by
plain LeCun initialisation with the last convolution of each block scaled by 0.1
(the blocks start near the identity, as the paper's init_scale=0.1 intends).

With L = 2 a discretized logistic mixture is a Bernoulli model, so binarized data
work too.
"""

import math
from typing import Any, TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dulx.distributions import logistic_mixture
from dulx.errors import ConfigError
from dulx.models import check_event_shape, condition_classes, require_int, require_levels
from dulx.models import require_rate
from dulx.nn.shifted_conv import ShiftedConv2D, down_shift, right_shift

if TYPE_CHECKING:
  from dulx.data import DatasetInfo

__all__ = ['GatedResnet', 'PixelCNNPP', 'build', 'concat_elu']


def concat_elu(x: jax.Array) -> jax.Array:
  """elu([x, -x]) on the last axis: [..., F] -> [..., 2F] (keeps both signs' information)."""
  return nn.elu(jnp.concatenate([x, -x], axis=-1))


def _kernel(shift: str) -> tuple[int, int]:
  return (2, 3) if shift == 'down' else (2, 2)


class GatedResnet(nn.Module):
  """The gated residual block of PixelCNN++ on one stream (module docstring, G(x, a)).

  Attributes:
    shift: the stream's convolution, 'down' (2x3) or 'down_right' (2x2).
    dropout: rate on the hidden features when training.
    num_classes: number of classes when class-conditional, else None.
    dtype: computation dtype.
  """
  shift: str
  dropout: float
  num_classes: int | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, a: jax.Array | None = None, y: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """x: [B, H, W, F], a: [B, H, W, F'] or None, y: [B] labels -> [B, H, W, F].

    Causal as its inputs: output (h, w) sees x and a at (h, w) and before it, in the
    stream's pattern, never anything after it.
    """
    features = x.shape[-1]
    c = ShiftedConv2D(features, _kernel(self.shift), self.shift, dtype=self.dtype)(concat_elu(x))
    if a is not None:
      c = c + nn.Dense(features, dtype=self.dtype, name='skip')(concat_elu(a))
    c = nn.Dropout(self.dropout, deterministic=not train)(concat_elu(c))
    small_init = nn.initializers.variance_scaling(0.01, 'fan_in', 'truncated_normal')
    c = ShiftedConv2D(2 * features, _kernel(self.shift), self.shift, dtype=self.dtype,
                      kernel_init=small_init)(c)
    if self.num_classes is not None:
      class_bias = nn.Embed(self.num_classes, 2 * features, name='class_bias')(y)
      c = c + class_bias[:, None, None, :].astype(self.dtype)
    value, gate = jnp.split(c, 2, axis=-1)
    return x + value * nn.sigmoid(gate)


class PixelCNNPP(nn.Module):
  """PixelCNN++ over images of discrete levels (module docstring).

  Attributes:
    event_shape: (H, W, C) of one image.
    num_levels: L >= 2, levels per sub-pixel.
    num_classes: number of classes when class-conditional, else None.
    dtype: computation dtype (parameters and the likelihood stay float32).
    num_filters: features of both streams (160 in the paper).
    num_resnet: gated resnet blocks per scale in the up pass (5 in the paper).
    num_scales: resolutions; each after the first halves the image (3 in the paper).
    num_components: K, logistic mixture components (10 in the paper).
    dropout: dropout rate in the blocks when training (0.5 in the paper).
  """
  event_shape: tuple[int, ...]
  num_levels: int
  num_classes: int | None = None
  dtype: Any = jnp.float32
  num_filters: int = 160
  num_resnet: int = 5
  num_scales: int = 3
  num_components: int = 10
  dropout: float = 0.5

  @property
  def dims_per_step(self) -> int:
    """C: a pixel's channels are drawn together (they share a mixture component)."""
    return self.event_shape[-1]

  def ordering(self) -> np.ndarray:
    """[H * W * C]: raster order over (h, w), channels in order within a pixel."""
    return np.arange(math.prod(self.event_shape))

  @nn.compact
  def network(self, u: jax.Array, y: jax.Array | None = None, *,
              train: bool = False) -> jax.Array:
    """The causal network on real-valued inputs (differentiable in u).

    Args:
      u: [B, H, W, C] float inputs; levels enter as x / (L - 1) in [0, 1].
      y: [B] int labels in [0, num_classes) when class-conditional; ignored otherwise.
      train: apply dropout (draws the 'dropout' rng).

    Returns:
      float32 mixture parameters [B, H, W, P], P = K (1 + 2C + C(C-1)/2); those of
      pixel (h, w) depend only on u at pixels before (h, w) in raster order (none of
      the pixel's own channels).
    """
    check_event_shape(u, self.event_shape)
    if self.num_classes is not None and y is None:
      raise ValueError('this PixelCNN++ is class-conditional: pass labels y [B].')
    y = None if self.num_classes is None else y
    f = self.num_filters
    conv = lambda kernel, shift, **kw: ShiftedConv2D(f, kernel, shift, dtype=self.dtype, **kw)
    block = lambda shift: GatedResnet(shift, self.dropout, self.num_classes, self.dtype)

    h = jnp.concatenate([2.0 * u - 1.0, jnp.ones_like(u[..., :1])], axis=-1)
    us = [down_shift(conv((2, 3), 'down')(h))]
    uls = [down_shift(conv((1, 3), 'down')(h)) + right_shift(conv((2, 1), 'down_right')(h))]
    for scale in range(self.num_scales):
      if scale:
        us.append(conv((2, 3), 'down', strides=2)(us[-1]))
        uls.append(conv((2, 2), 'down_right', strides=2)(uls[-1]))
      for _ in range(self.num_resnet):
        us.append(block('down')(us[-1], y=y, train=train))
        uls.append(block('down_right')(uls[-1], us[-1], y, train=train))

    u, ul = us.pop(), uls.pop()
    for scale in reversed(range(self.num_scales)):
      if scale < self.num_scales - 1:
        # Up-sample, then crop odd sizes (7 -> 4 -> 8) back to the kept maps'.
        height, width = us[-1].shape[1:3]
        u = conv((2, 3), 'down', strides=2, transpose=True)(u)[:, :height, :width]
        ul = conv((2, 2), 'down_right', strides=2, transpose=True)(ul)[:, :height, :width]
      for _ in range(self.num_resnet + (scale < self.num_scales - 1)):
        u = block('down')(u, us.pop(), y, train=train)
        ul = block('down_right')(ul, jnp.concatenate([u, uls.pop()], axis=-1), y, train=train)
    size = logistic_mixture.num_params(self.event_shape[-1], self.num_components)
    return nn.Dense(size, dtype=self.dtype, name='head')(nn.elu(ul)).astype(jnp.float32)

  def __call__(self, x: jax.Array, y: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """Teacher-forced mixture parameters of every pixel.

    Args:
      x: [B, H, W, C] int levels in [0, num_levels).
      y: [B] int labels when class-conditional; ignored otherwise.
      train: apply dropout (draws the 'dropout' rng).

    Returns:
      float32 [B, H, W, P] raw parameters (`logistic_mixture` layout).
    """
    return self.network(x.astype(jnp.float32) / (self.num_levels - 1), y, train=train)

  def log_prob(self, x: jax.Array, y: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """log p(x) (or log p(x | y)) in nats: [B] float32, summed over the H * W pixels."""
    per_pixel = logistic_mixture.log_prob(self(x, y, train=train), x, self.num_levels)
    return per_pixel.reshape(x.shape[0], -1).sum(axis=-1)

  def step_outputs(self, outputs: jax.Array, dims: jax.Array) -> jax.Array:
    """The mixture parameters [B, P] of the pixel whose C channels are `dims` ([C] int32)."""
    flat = outputs.reshape(outputs.shape[0], -1, outputs.shape[-1])
    return flat[:, dims[0] // self.event_shape[-1]]

  def draw_step(self, step_out: jax.Array, rng: jax.Array, temperature: jax.Array) -> jax.Array:
    """[B, C] int32: one pixel's channels drawn jointly from its mixture [B, P]."""
    return logistic_mixture.sample(rng, step_out, num_channels=self.event_shape[-1],
                                   num_levels=self.num_levels, temperature=temperature)


def build(info: 'DatasetInfo', *, dtype: Any = jnp.float32, num_filters: int = 160,
          num_resnet: int = 5, num_scales: int = 3, num_components: int = 10,
          dropout: float = 0.5, conditional: bool = False) -> PixelCNNPP:
  """PixelCNN++ for `info`'s discrete images (any number of levels >= 2).

  Args:
    info: metadata of a discrete image dataset, examples of shape (H, W, C).
    dtype: computation dtype.
    num_filters: features of the two streams (>= 1).
    num_resnet: gated resnet blocks per scale (>= 1).
    num_scales: resolutions (>= 1); each after the first halves the image, while it
      is larger than 1x1.
    num_components: logistic mixture components per pixel (>= 1; 5 to 10 usual).
    dropout: dropout rate in the blocks when training, in [0, 1).
    conditional: condition on the class label (needs a labelled dataset).
  """
  if len(info.shape) != 3:
    raise ConfigError(f'PixelCNN++ models images of shape (H, W, C), but {info.spec!r} has '
                      f'examples of shape {tuple(info.shape)}.')
  num_levels = require_levels(info, 'PixelCNN++')
  num_scales = require_int('num_scales', num_scales)
  most = 1 + math.ceil(math.log2(max(info.shape[:2])))
  if num_scales > most:
    raise ConfigError(f'--num_scales={num_scales} halves {info.shape[0]}x{info.shape[1]} images '
                      f'below 1x1; use at most {most}.')
  return PixelCNNPP(
      event_shape=tuple(info.shape), num_levels=num_levels,
      num_classes=condition_classes(info, conditional, 'PixelCNN++'), dtype=dtype,
      num_filters=require_int('num_filters', num_filters),
      num_resnet=require_int('num_resnet', num_resnet),
      num_scales=num_scales,
      num_components=require_int('num_components', num_components),
      dropout=require_rate('dropout', dropout))
