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

Fast sampling (Ramachandran et al. 2017, "Fast Generation for Convolutional
Autoregressive Models"): `decode(x, t)` computes the parameters of pixel t = (i, j)
at one position per scale instead of over the whole image. Every map is causal at its
own scale s (H_s = ceil(H / 2^s) rows, W_s = ceil(W / 2^s) columns): its features at
(r, c) see only pixels before (2^s r, 2^s c) in raster order, those of the u stream
only rows < 2^s r. Every operation computes its output at (r, c) from

  - rows r - 1, r and columns c - 1 .. c (ul) or c - 1 .. c + 1 (u) of its input (the
    2-tall convolutions of the blocks), or (r, c) itself (the 1x1 layers);
  - rows 2r - 1, 2r and columns 2c - 1 .. 2c (ul) or 2c - 1 .. 2c + 1 (u) of the finer
    scale (the stride-2 convolutions);
  - (r // 2, c // 2) of the coarser scale (the transposed convolutions; u's also
    column c // 2 + 1 for an odd c; the crop of odd sizes, 7 -> 4 -> 8 -> 7, drops the
    last rows and columns and shifts none);
  - rows r - 2 .. r of the image (the first layer);

and the u stream never reads ul. So `decode` runs the graph of `network` (`_stream`)
in two parts:

  - when row i starts (j = 0), the u stream at rows i >> s of every scale, whole rows:
    they see only rows < 2^s (i >> s) <= i, all drawn;
  - at every step, the ul stream at the positions (i >> s, j >> s) alone: they see
    only pixels before (2^s (i >> s), 2^s (j >> s)) <= (i, j), all drawn.

Every 2-tall convolution keeps the last rows of its input map in the 'cache'
collection (a ring buffer of 2 rows, 3 for the stride-2 ones), writes its new input row
or pixel there and reads its window from it. This is exact: every value is written
only when all the pixels it sees are drawn, so it is final, and every window lies at
or before the current position of its scale (above it, or to its left in its row), all
written at this or an earlier step and not yet overwritten. A step
costs one position per layer and scale (and, once per row, one row per scale for u):
about one forward pass per image in all, where the naive sampler makes H W of them.
"""

from collections.abc import Callable
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


# The two streams and the shift of their convolutions; the kernels of the blocks and
# of the stride-2 (transposed) convolutions.
_STREAMS = {'u': 'down', 'ul': 'down_right'}
_KERNELS = {'down': (2, 3), 'down_right': (2, 2)}


def concat_elu(x: jax.Array) -> jax.Array:
  """elu([x, -x]) on the last axis: [..., F] -> [..., 2F] (keeps both signs' information)."""
  return nn.elu(jnp.concatenate([x, -x], axis=-1))


def _cached_window(module: nn.Module, name: str, conv: ShiftedConv2D, x: jax.Array,
                   position: tuple[jax.Array, jax.Array], size: tuple[int, int]) -> jax.Array:
  """The padded input window of `conv` at some outputs, through a ring buffer of input rows.

  The input map of `conv` (stride s, kernel (kh, kw)), [B, *size, F] zero padded as
  `conv.padding()` pads it (top = kh - 1 rows above, none below), is kept as `module`'s
  'cache' variable `name`: its last R = kh + s - 1 padded rows, padded row p in slots
  p mod R and R + p mod R, [B, 2R, W + kw - 1, F] (kept twice, any kh <= R + 1
  consecutive rows are one slice, which reads faster than a gather of rows). x
  [B, 1, n, F] (a whole row: n = W, col = 0; or one pixel: n = 1) is written at input
  position (row, col), and the window [B, kh, s (ceil(n / s) - 1) + kw, F] is returned
  from which `conv.window` computes the outputs at row row // s and columns
  col // s .. (col + n - 1) // s. That window's padded rows are s (row // s) ..
  s (row // s) + kh - 1, the newest of which is row's own (padded row row + top) or,
  with s = 2 and an odd row, the one before it: R rows keep every row read and the one
  being written apart. Slots 0 and R start as the top padding.
  """
  (top, _), (left, right) = conv.padding()
  (kh, kw), s = conv.kernel_size, conv.strides
  (row, col), (_, width) = position, size
  batch, _, n, features = x.shape
  slots = kh + s - 1
  cache = module.variable('cache', name, jnp.zeros,
                          (batch, 2 * slots, width + left + right, features), x.dtype)
  for copy in (0, slots):  # Each row twice, so that every window is one contiguous slice.
    cache.value = jax.lax.dynamic_update_slice(
        cache.value, x, (0, (row + top) % slots + copy, col + left, 0))
  return jax.lax.dynamic_slice(cache.value, (0, row // s * s % slots, col // s * s, 0),
                               (batch, kh, s * (-(-n // s) - 1) + kw, features))


class GatedResnet(nn.Module):
  """The gated residual block of PixelCNN++ on one stream (module docstring, G(x, a)).

  Attributes:
    features: F, the stream's features.
    shift: the stream's convolution, 'down' (2x3) or 'down_right' (2x2).
    dropout: rate on the hidden features when training.
    num_classes: number of classes when class-conditional, else None.
    dtype: computation dtype.
  """
  features: int
  shift: str
  dropout: float
  num_classes: int | None = None
  dtype: Any = jnp.float32

  def setup(self):
    kernel = _KERNELS[self.shift]
    small_init = nn.initializers.variance_scaling(0.01, 'fan_in', 'truncated_normal')
    self.conv_hidden = ShiftedConv2D(self.features, kernel, self.shift, dtype=self.dtype)
    self.skip = nn.Dense(self.features, dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout)
    self.conv_out = ShiftedConv2D(2 * self.features, kernel, self.shift, dtype=self.dtype,
                                  kernel_init=small_init)
    if self.num_classes is not None:
      self.class_bias = nn.Embed(self.num_classes, 2 * self.features)

  def _add_skip(self, c: jax.Array, a: jax.Array | None) -> jax.Array:
    """c + NiN(concat_elu(a)), or c when a is None."""
    return c if a is None else c + self.skip(concat_elu(a))

  def _gate(self, x: jax.Array, c: jax.Array, y: jax.Array | None) -> jax.Array:
    """x + A * sigmoid(B), [A, B] = c + V y: [B, H', W', F], [B, H', W', 2F] -> [B, H', W', F]."""
    if self.num_classes is not None:
      c = c + self.class_bias(y)[:, None, None, :].astype(self.dtype)
    value, gate = jnp.split(c, 2, axis=-1)
    return x + value * nn.sigmoid(gate)

  def __call__(self, x: jax.Array, a: jax.Array | None = None, y: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """x: [B, H, W, F], a: [B, H, W, F'] or None, y: [B] labels -> [B, H, W, F].

    Causal as its inputs: output (h, w) sees x and a at (h, w) and before it, in the
    stream's pattern, never anything after it.
    """
    c = self._add_skip(self.conv_hidden(concat_elu(x)), a)
    c = self.conv_out(self.drop(concat_elu(c), deterministic=not train))
    return self._gate(x, c, y)

  @nn.compact
  def decode(self, x: jax.Array, a: jax.Array | None, y: jax.Array | None,
             position: tuple[jax.Array, jax.Array], size: tuple[int, int]) -> jax.Array:
    """The block at some positions alone: x [B, 1, n, F], a [B, 1, n, F'] or None -> [B, 1, n, F].

    x is the input at (row, col) of a [B, *size, F] map: a whole row (n = W, col = 0)
    or one pixel (n = 1). Each convolution reads the rest of its window from the
    'cache' variables 'input' (x) and 'hidden' (c), the last 2 rows of the input maps
    (kept twice: [B, 4, W + kw - 1, .]) into which x and c are written first
    (`_cached_window`). No dropout.
    """
    window = _cached_window(self, 'input', self.conv_hidden, x, position, size)
    c = self._add_skip(self.conv_hidden.window(concat_elu(window)), a)
    window = _cached_window(self, 'hidden', self.conv_out, c, position, size)
    return self._gate(x, self.conv_out.window(concat_elu(window)), y)


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

  def setup(self):
    f, scales = self.num_filters, self.num_scales

    def conv(kernel, shift, name, **kw):
      return ShiftedConv2D(f, kernel, shift, dtype=self.dtype, name=name, **kw)

    def blocks(name, number):  # One {stream: block} per level.
      return [{stream: GatedResnet(f, shift, self.dropout, self.num_classes, self.dtype,
                                   name=f'{name}_{stream}{k}')
               for stream, shift in _STREAMS.items()}
              for k in range(number)]

    self.input_u = conv((2, 3), 'down', 'input_u')
    self.input_ul_above = conv((1, 3), 'down', 'input_ul_above')
    self.input_ul_left = conv((2, 1), 'down_right', 'input_ul_left')
    # Scale s of the up pass (opened by downsample[s - 1] for s > 0) and of the down
    # pass (opened by upsample[s], from scale s + 1, for s < num_scales - 1).
    self.downsample = [{stream: conv(_KERNELS[shift], shift, f'up{s}_downsample_{stream}',
                                     strides=2)
                        for stream, shift in _STREAMS.items()}
                       for s in range(1, scales)]
    self.up_blocks = [blocks(f'up{s}', self.num_resnet) for s in range(scales)]
    self.upsample = [{stream: conv(_KERNELS[shift], shift, f'down{s}_upsample_{stream}',
                                   strides=2, transpose=True)
                      for stream, shift in _STREAMS.items()}
                     for s in range(scales - 1)]
    self.down_blocks = [blocks(f'down{s}', self.num_resnet + (s < scales - 1))
                        for s in range(scales)]
    size = logistic_mixture.num_params(self.event_shape[-1], self.num_components)
    self.head = nn.Dense(size, dtype=self.dtype)

  def _check(self, x: jax.Array, y: jax.Array | None) -> jax.Array | None:
    """y, or None when unconditional; raises on a wrong shape or missing labels."""
    check_event_shape(x, self.event_shape)
    if self.num_classes is not None and y is None:
      raise ValueError('this PixelCNN++ is class-conditional: pass labels y [B].')
    return None if self.num_classes is None else y

  def _sizes(self) -> list[tuple[int, int]]:
    """(H_s, W_s) = (ceil(H / 2^s), ceil(W / 2^s)) of each scale s."""
    height, width, _ = self.event_shape
    return [(-(-height // 2**s), -(-width // 2**s)) for s in range(self.num_scales)]

  def _inputs(self, u: jax.Array) -> jax.Array:
    """h = [2 u - 1, 1]: [B, H, W, C] -> [B, H, W, C + 1] (the ones mark the padding)."""
    return jnp.concatenate([2.0 * u - 1.0, jnp.ones_like(u[..., :1])], axis=-1)

  def _stream(self, stream: str, x: jax.Array, block: Callable, downsample: Callable,
              upsample: Callable, vertical: Callable | None = None) -> list[jax.Array]:
    """One stream's up and down passes (module docstring) from its first layer's map x.

    stream: 'u' or 'ul'. The u stream reads only itself, so it runs first; the ul
    stream reads vertical(k, s), the output of the k-th u block (at scale s). One
    graph serves whole maps (`network`) and one position per scale (`decode`): the
    operations come as functions told the scale s of their output:
    block(module, x, a, s) applies a GatedResnet; downsample(conv, x, s) the stride-2
    convolution of scale s - 1's map x; upsample(conv, x, s) the transposed
    convolution of scale s + 1's map x, cropped to scale s.

    Returns:
      the outputs of the stream's blocks in order (the last is the final map).
    """
    kept, outputs = [x], []
    for s in range(self.num_scales):
      if s:
        kept.append(downsample(self.downsample[s - 1][stream], kept[-1], s))
      for blocks in self.up_blocks[s]:
        a = None if vertical is None else vertical(len(outputs), s)
        kept.append(block(blocks[stream], kept[-1], a, s))
        outputs.append(kept[-1])
    x = kept.pop()
    for s in reversed(range(self.num_scales)):
      if s < self.num_scales - 1:
        x = upsample(self.upsample[s][stream], x, s)
      for blocks in self.down_blocks[s]:
        a = kept.pop()
        if vertical is not None:
          a = jnp.concatenate([vertical(len(outputs), s), a], axis=-1)
        x = block(blocks[stream], x, a, s)
        outputs.append(x)
    return outputs

  def _head(self, ul: jax.Array) -> jax.Array:
    """NiN(elu(ul)): [..., F] -> float32 [..., P]."""
    return self.head(nn.elu(ul)).astype(jnp.float32)

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
    y = self._check(u, y)
    h = self._inputs(u)
    sizes = self._sizes()
    ops = dict(
        block=lambda module, x, a, s: module(x, a, y, train=train),
        downsample=lambda conv, x, s: conv(x),
        # Up-sample, then crop odd sizes (7 -> 4 -> 8) back to the kept maps'.
        upsample=lambda conv, x, s: conv(x)[:, :sizes[s][0], :sizes[s][1]])
    us = self._stream('u', down_shift(self.input_u(h)), **ops)
    ul = down_shift(self.input_ul_above(h)) + right_shift(self.input_ul_left(h))
    return self._head(self._stream('ul', ul, **ops, vertical=lambda k, s: us[k])[-1])

  def _decode_ops(self, y: jax.Array | None, position: Callable, whole_rows: bool) -> dict:
    """`_stream`'s operations at one position per scale, through the caches (decode).

    position(s) is the (row, col) of the current position at scale s: col 0 with
    whole_rows (the x of every operation is then a whole row [B, 1, W_s, F]), else
    one pixel (x: [B, 1, 1, F]).
    """
    sizes = self._sizes()

    def block(module, x, a, s):
      return module.decode(x, a, y, position(s), sizes[s])

    def downsample(conv, x, s):  # x is at position(s - 1).
      return conv.window(_cached_window(self, f'{conv.name}_input', conv, x, position(s - 1),
                                        sizes[s - 1]))

    def upsample(conv, x, s):  # x is at position(s + 1): keep position(s) of its outputs.
      row, col = position(s)
      width = sizes[s][1] if whole_rows else 1
      return jax.lax.dynamic_slice(conv(x), (0, row % 2, col % 2, 0),
                                   (x.shape[0], 1, width, x.shape[-1]))

    return dict(block=block, downsample=downsample, upsample=upsample)

  def _start_row(self, padded: jax.Array, y: jax.Array | None, i: jax.Array) -> None:
    """The u stream's row i >> s at every scale s, into the cache (`vertical{k}`).

    padded: the inputs h zero padded by 2 rows above and 1 column either side.
    """
    window = jax.lax.dynamic_slice_in_dim(padded, i, 2, axis=1)  # h's rows i - 2, i - 1.
    # Row i - 1 of Conv_down[2x3](h), which down_shift moves to row i (row 0: zeros).
    u = jnp.where(i > 0, self.input_u.window(window), 0)
    ops = self._decode_ops(y, lambda s: (i >> s, 0), whole_rows=True)
    for k, output in enumerate(self._stream('u', u, **ops)):
      self.variable('cache', f'vertical{k}', jnp.zeros, output.shape, output.dtype).value = output

  @nn.compact
  def decode(self, x: jax.Array, t: int | jax.Array, y: jax.Array | None = None) -> jax.Array:
    """The mixture parameters of pixel t from the caches: one step of cached sampling.

    Applied with mutable=['cache'] at t = 0, 1, ..., H W - 1 in turn (the call at
    t = 0 creates the cache) on the partly drawn x; equals the teacher-forced
    parameters of pixel t = (i, j) (module docstring, fast sampling). When a row
    starts, the u stream is computed at its rows i >> s (`nn.cond`, so only then);
    every step computes the ul stream at its positions (i >> s, j >> s) alone. Each
    2-tall convolution keeps the last rows of its input map in the cache
    (GatedResnet.decode; `{name}_input` for the stride-2 ones; 2 or 3 rows, kept
    twice), [B, 4 or 6, W_s + kw - 1, F], and
    `vertical{k}` holds the current row of the k-th u block's output.

    Args:
      x: [B, H, W, C] int levels; the pixels before t are drawn, the rest are
        unread or masked out (their values do not matter).
      t: step index in [0, H * W): the pixel, in raster order.
      y: [B] int labels when class-conditional; ignored otherwise.

    Returns:
      float32 [B, P] mixture parameters of pixel t (`step_outputs` of the
      teacher-forced outputs).
    """
    y = self._check(x, y)
    i, j = jnp.divmod(t, self.event_shape[1])
    h = self._inputs(x.astype(jnp.float32) / (self.num_levels - 1))
    padded = jnp.pad(h, ((0, 0), (2, 0), (1, 1), (0, 0)))  # h[a, b] is padded[a + 2, b + 1].
    if self.has_variable('cache', 'vertical0'):
      nn.cond(j == 0, PixelCNNPP._start_row, lambda *_: None, self, padded, y, i)
    else:  # The call that creates the cache (t = 0) starts its row outside nn.cond.
      self._start_row(padded, y, i)
    # The first layer at (i, j): Conv_down[1x3](h) at (i - 1, j) (down_shift) and
    # Conv_down_right[2x1](h) at (i, j - 1) (right_shift).
    batch, channels = x.shape[0], h.shape[-1]
    above = self.input_ul_above.window(
        jax.lax.dynamic_slice(padded, (0, i + 1, j, 0), (batch, 1, 3, channels)))
    left = self.input_ul_left.window(
        jax.lax.dynamic_slice(padded, (0, i + 1, j, 0), (batch, 2, 1, channels)))
    ul = jnp.where(i > 0, above, 0) + jnp.where(j > 0, left, 0)
    vertical = lambda k, s: jax.lax.dynamic_slice_in_dim(
        self.get_variable('cache', f'vertical{k}'), j >> s, 1, axis=2)
    ops = self._decode_ops(y, lambda s: (i >> s, j >> s), whole_rows=False)
    ul = self._stream('ul', ul, **ops, vertical=vertical)[-1]  # [B, 1, 1, F] at (i, j).
    return self._head(ul[:, 0, 0])

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
