"""The reusable flow layers: couplings, normalisations, permutations, squeeze, factor-out.

Every layer keeps the flow contract of `dulx.models.flows.base`:

    forward(x, context=None, *, train=False) -> (z, logdet)   logdet = log |det dz/dx|, [B]
    inverse(z, context=None, *, train=False) -> (x, logdet)   logdet = log |det dx/dz|, [B]

on a batch `x: [B, ...]` (images [B, H, W, C], vectors [B, D]); the two logdets of a
round trip sum to zero. `context` ([B, H, W, F] features at the layer's resolution) is
read by couplings only (e.g. the data a dequantizing flow is conditioned on); `train`
by batch normalisation only. Layers that need neither take and ignore them, so a
`Chain` passes both to every layer.

Parameters that `forward` and `inverse` share are created in one `@nn.compact`
helper per layer that both call (the pattern of big_vision's Jet flow), so a model
initialised through `forward` samples through `inverse` with the same variables.
Flow arithmetic is float32; only the conditioner networks use the compute `dtype`.
"""

from collections.abc import Sequence
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = [
    'ActNorm', 'BatchNorm', 'Chain', 'ConvNet', 'Coupling', 'FactorOut', 'Invertible1x1Conv',
    'MLP', 'Repeat', 'Reshape', 'Scaling', 'Squeeze', 'Unsqueeze', 'ZeroConv', 'checkerboard',
    'squeeze', 'unsqueeze',
]

# Matmuls inside a flow run at full float32 precision: on accelerators the default
# (TF32 / bf16 passes) breaks inverse(forward(x)) == x at the 1e-3 level.
_HIGHEST = jax.lax.Precision.HIGHEST


def _sum_per_example(t: jax.Array) -> jax.Array:
  """[B, ...] -> [B]: the sum over every axis but the batch axis, in float32."""
  return t.astype(jnp.float32).reshape(t.shape[0], -1).sum(axis=-1)


def squeeze(x: jax.Array) -> jax.Array:
  """Space-to-depth (Dinh et al. 2017, Fig. 3): [B, H, W, C] -> [B, H/2, W/2, 4C].

  Each 2x2 block of a channel becomes 4 channels of one pixel, ordered
  (row in block, column in block, channel).
  """
  b, h, w, c = x.shape
  if h % 2 or w % 2:
    raise ValueError(f'squeeze needs even height and width, got shape {x.shape}.')
  x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // 2, w // 2, 4 * c)


def unsqueeze(x: jax.Array) -> jax.Array:
  """Depth-to-space, the inverse of `squeeze`: [B, H, W, 4C] -> [B, 2H, 2W, C]."""
  b, h, w, c = x.shape
  x = x.reshape(b, h, w, 2, 2, c // 4).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, 2 * h, 2 * w, c // 4)


def checkerboard(shape: Sequence[int], parity: int) -> jax.Array:
  """The binary mask b of a checkerboard coupling, 1 where inputs are kept.

  Args:
    shape: the batch's shape, [B, H, W, C] (images) or [B, D] (vectors).
    parity: 0 or 1; the two parities are complementary.

  Returns:
    float32 [1, H, W, 1] with b = ((h + w) % 2 == parity) for images, or [1, D]
    with b = (d % 2 == parity) for vectors (NICE's odd/even partition).
  """
  if len(shape) == 4:
    h, w = shape[1], shape[2]
    grid = jnp.arange(h)[:, None] + jnp.arange(w)[None, :]
    return (grid % 2 == parity).astype(jnp.float32)[None, :, :, None]
  if len(shape) == 2:
    return (jnp.arange(shape[1]) % 2 == parity).astype(jnp.float32)[None]
  raise ValueError(f'checkerboard masks need [B, H, W, C] or [B, D], got shape {tuple(shape)}.')


# Conditioner networks: (x_kept [B, ...], num_out, context) -> [B, ..., num_out] float32.
# Their last layer starts at zero, so every coupling starts as the identity (Glow, Sec. 3.3).


class MLP(nn.Module):
  """The NICE coupling network: ReLU dense layers on vectors [B, D] (Dinh et al. 2015).

  Attributes:
    hidden_sizes: widths of the hidden layers.
    dtype: computation dtype.
  """
  hidden_sizes: Sequence[int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, num_out: int, context: jax.Array | None = None) -> jax.Array:
    h = x if context is None else jnp.concatenate([x, context.reshape(x.shape[0], -1)], -1)
    h = h.astype(self.dtype)
    for width in self.hidden_sizes:
      h = nn.relu(nn.Dense(width, dtype=self.dtype)(h))
    out = nn.Dense(num_out, dtype=self.dtype, kernel_init=nn.initializers.zeros)(h)
    return out.astype(jnp.float32)


class ConvNet(nn.Module):
  """A convolutional coupling network on images [B, H, W, C].

  conv3x3 -> ReLU -> num_blocks residual blocks (conv3x3 -> ReLU -> conv1x1) -> ReLU
  -> conv1x1 -> ReLU -> zero-initialised conv3x3. With num_blocks = 0 this is Glow's
  network (Kingma & Dhariwal 2018, Sec. 3.3); with residual blocks, RealNVP's ResNet
  (Dinh et al. 2017, Sec. 4.1).

  Attributes:
    hidden: features of every hidden layer.
    num_blocks: residual blocks.
    dtype: computation dtype.
  """
  hidden: int
  num_blocks: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, num_out: int, context: jax.Array | None = None) -> jax.Array:
    h = x if context is None else jnp.concatenate([x, context.astype(x.dtype)], -1)
    h = nn.Conv(self.hidden, (3, 3), dtype=self.dtype)(h.astype(self.dtype))
    for _ in range(self.num_blocks):
      r = nn.Conv(self.hidden, (3, 3), dtype=self.dtype)(nn.relu(h))
      h = h + nn.Conv(self.hidden, (1, 1), dtype=self.dtype)(nn.relu(r))
    h = nn.relu(nn.Conv(self.hidden, (1, 1), dtype=self.dtype)(nn.relu(h)))
    out = nn.Conv(num_out, (3, 3), dtype=self.dtype, kernel_init=nn.initializers.zeros)(h)
    return out.astype(jnp.float32)


class ZeroConv(nn.Module):
  """One zero-initialised conv3x3: Glow's learned prior of a factored-out half (Sec. 3.3)."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, num_out: int, context: jax.Array | None = None) -> jax.Array:
    h = x if context is None else jnp.concatenate([x, context.astype(x.dtype)], -1)
    out = nn.Conv(num_out, (3, 3), dtype=self.dtype, kernel_init=nn.initializers.zeros)(
        h.astype(self.dtype))
    return out.astype(jnp.float32)


class Coupling(nn.Module):
  """Affine or additive coupling (Dinh et al. 2015, 2017).

  Inputs split into a kept part x_k and a transformed part x_t; with
  (t, r) = conditioner(x_k) and a tanh-bounded log-scale s = a * tanh(r) (a learned
  per channel, starting at 1, as RealNVP's scale parameter keeps s from exploding):

    affine:    z_t = x_t * exp(s) + t,    logdet = sum s
    additive:  z_t = x_t + t,             logdet = 0           (NICE)

  and z_k = x_k. Masks: 'checkerboard' keeps the pixels (or, on vectors, the entries)
  where `checkerboard(x.shape, parity)` is 1 and feeds the network x * b, with t and s
  multiplied by 1 - b; 'channel' keeps one half of the last axis: the first
  floor(C/2) channels for parity 0, the others for parity 1.

  Attributes:
    conditioner: the network, called as conditioner(x_k, num_out, context).
    mask: 'checkerboard' or 'channel'.
    parity: 0 or 1, which part is kept.
    affine: affine (True) or additive (False) coupling.
  """
  conditioner: nn.Module
  mask: str = 'channel'
  parity: int = 0
  affine: bool = True

  def _split(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(kept part, transformed part)."""
    if self.mask == 'checkerboard':
      return x * checkerboard(x.shape, self.parity), x
    k = x.shape[-1] // 2
    a, b = x[..., :k], x[..., k:]
    return (a, b) if self.parity == 0 else (b, a)

  def _merge(self, kept: jax.Array, transformed: jax.Array) -> jax.Array:
    if self.mask == 'checkerboard':
      return transformed  # Its kept entries passed through unchanged (t = s = 0 there).
    parts = (kept, transformed) if self.parity == 0 else (transformed, kept)
    return jnp.concatenate(parts, axis=-1)

  @nn.compact
  def _shift_and_log_scale(self, kept: jax.Array, num_out: int,
                           context: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """t and s of the transformed part, [B, ..., num_out] each (s = 0 if additive)."""
    if self.mask not in ('checkerboard', 'channel'):
      raise ValueError(f'unknown coupling mask {self.mask!r}.')
    if not self.affine:
      shift = self.conditioner(kept, num_out, context)
      log_scale = jnp.zeros_like(shift)
    else:
      shift, raw = jnp.split(self.conditioner(kept, 2 * num_out, context), 2, axis=-1)
      factor = self.param('log_scale_factor', nn.initializers.ones, (num_out,), jnp.float32)
      log_scale = factor * jnp.tanh(raw)
    if self.mask == 'checkerboard':
      free = 1.0 - checkerboard(kept.shape, self.parity)
      shift, log_scale = shift * free, log_scale * free
    return shift, log_scale

  def forward(self, x, context=None, *, train=False):
    del train
    kept, moved = self._split(x.astype(jnp.float32))
    shift, log_scale = self._shift_and_log_scale(kept, moved.shape[-1], context)
    return self._merge(kept, moved * jnp.exp(log_scale) + shift), _sum_per_example(log_scale)

  def inverse(self, z, context=None, *, train=False):
    del train
    kept, moved = self._split(z.astype(jnp.float32))
    shift, log_scale = self._shift_and_log_scale(kept, moved.shape[-1], context)
    return self._merge(kept, (moved - shift) * jnp.exp(-log_scale)), -_sum_per_example(log_scale)


class Scaling(nn.Module):
  """NICE's diagonal scaling z = x * exp(s), s one parameter per dimension (Dinh et al. 2015, Sec. 3.3).

  logdet = sum s. It gives the volume-preserving additive couplings a way to weigh
  dimensions.
  """

  @nn.compact
  def _log_scale(self, x: jax.Array) -> jax.Array:
    return self.param('log_scale', nn.initializers.zeros, x.shape[1:], jnp.float32)

  def forward(self, x, context=None, *, train=False):
    del context, train
    s = self._log_scale(x)
    return x * jnp.exp(s), jnp.full(x.shape[:1], s.sum())

  def inverse(self, z, context=None, *, train=False):
    del context, train
    s = self._log_scale(z)
    return z * jnp.exp(-s), jnp.full(z.shape[:1], -s.sum())


class ActNorm(nn.Module):
  """Activation normalisation z = (x + b) * exp(s) per channel (Kingma & Dhariwal 2018, Sec. 3.1).

  b and s ([C], the last axis) are initialised from the batch seen at `init`, so
  that z has zero mean and unit variance per channel on it: b = -mean(x),
  s = -log(std(x) + eps). logdet = (number of positions) * sum s.
  """
  eps: float = 1e-6

  @nn.compact
  def _params(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    axes = tuple(range(x.ndim - 1))
    x = x.astype(jnp.float32)
    # The initialisers read the data: flax runs them only at `init`, on its batch.
    bias = self.param('bias', lambda _: -x.mean(axes))
    log_scale = self.param('log_scale', lambda _: -jnp.log(x.std(axes) + self.eps))
    return bias, log_scale

  def forward(self, x, context=None, *, train=False):
    del context, train
    bias, log_scale = self._params(x)
    positions = math.prod(x.shape[1:-1])
    return (x + bias) * jnp.exp(log_scale), jnp.full(x.shape[:1], positions * log_scale.sum())

  def inverse(self, z, context=None, *, train=False):
    del context, train
    bias, log_scale = self._params(z)
    positions = math.prod(z.shape[1:-1])
    return z * jnp.exp(-log_scale) - bias, jnp.full(z.shape[:1], -positions * log_scale.sum())


class BatchNorm(nn.Module):
  """Batch normalisation as a flow (Dinh et al. 2017, Sec. 3.7), per channel (last axis).

    z = (x - mu) / sqrt(var + eps) * exp(g) + b,   logdet = positions * sum(g - log(var + eps) / 2)

  In training (`train=True`) mu and var are the batch's statistics, treated as
  constants in the logdet as in the paper, and running averages are updated when
  the 'batch_stats' collection is mutable; otherwise (evaluation, sampling) the
  running averages are used, and the layer is an exact per-example bijection.
  `inverse` always uses the running averages.

  Attributes:
    momentum: running-average decay.
    eps: variance floor.
  """
  momentum: float = 0.9
  eps: float = 1e-4

  @nn.compact
  def _params(self, x: jax.Array, train: bool) -> tuple[jax.Array, ...]:
    channels = x.shape[-1]
    running_mean = self.variable('batch_stats', 'mean', jnp.zeros, (channels,), jnp.float32)
    running_var = self.variable('batch_stats', 'var', jnp.ones, (channels,), jnp.float32)
    log_scale = self.param('log_scale', nn.initializers.zeros, (channels,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (channels,), jnp.float32)
    if not train:
      return running_mean.value, running_var.value, log_scale, bias
    axes = tuple(range(x.ndim - 1))
    mean, var = x.mean(axes), x.var(axes)
    if self.is_mutable_collection('batch_stats') and not self.is_initializing():
      running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
      running_var.value = self.momentum * running_var.value + (1 - self.momentum) * var
    return mean, var, log_scale, bias

  def forward(self, x, context=None, *, train=False):
    del context
    x = x.astype(jnp.float32)
    mean, var, log_scale, bias = self._params(x, train)
    z = (x - mean) * jax.lax.rsqrt(var + self.eps) * jnp.exp(log_scale) + bias
    logdet = math.prod(x.shape[1:-1]) * (log_scale - 0.5 * jnp.log(var + self.eps)).sum()
    return z, jnp.full(x.shape[:1], logdet)

  def inverse(self, z, context=None, *, train=False):
    del context, train
    mean, var, log_scale, bias = self._params(z, False)
    x = (z - bias) * jnp.exp(-log_scale) * jnp.sqrt(var + self.eps) + mean
    logdet = math.prod(z.shape[1:-1]) * (log_scale - 0.5 * jnp.log(var + self.eps)).sum()
    return x, jnp.full(z.shape[:1], -logdet)


def _lu_init(rng: jax.Array, channels: int, dtype: Any = jnp.float32) -> jax.Array:
  """A random rotation's LU factors packed into one [C, C] matrix (Glow, Sec. 3.2).

  Q (Haar-random orthogonal) = P L U; P^T Q = L U is orthogonal too, and so is
  L U D with D = diag(sign(diag U)), whose upper factor has a positive diagonal. So
  W = L (U' + diag(exp(log_s))) starts as a random rotation with no permutation or
  sign to store: strictly lower part = L (unit diagonal implied), strictly upper
  part = U', diagonal = log_s.
  """
  q, _ = jnp.linalg.qr(jax.random.normal(rng, (channels, channels), jnp.float32))
  _, lower, upper = jax.scipy.linalg.lu(q)
  diagonal = jnp.diag(upper)
  upper = upper * jnp.sign(diagonal)[None, :]
  packed = jnp.tril(lower, -1) + jnp.triu(upper, 1) + jnp.diag(jnp.log(jnp.abs(diagonal)))
  return packed.astype(dtype)


class Invertible1x1Conv(nn.Module):
  """Invertible 1x1 convolution z = x W per position, LU-decomposed (Kingma & Dhariwal 2018, Sec. 3.2).

  W = L (U + diag(exp(log_s))), L unit lower-triangular, U strictly upper: the
  determinant is prod exp(log_s), so logdet = (number of positions) * sum log_s, O(C)
  instead of O(C^3), and W^-1 comes from two triangular solves.
  """

  @nn.compact
  def factors(self, channels: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(L [C, C], U + diag(exp(log_s)) [C, C], log_s [C])."""
    packed = self.param('lu', _lu_init, channels)
    log_s = jnp.diag(packed)
    lower = jnp.tril(packed, -1) + jnp.eye(channels)
    upper = jnp.triu(packed, 1) + jnp.diag(jnp.exp(log_s))
    return lower, upper, log_s

  def weight(self, channels: int) -> jax.Array:
    """W [C, C] (x W maps a position's channels)."""
    lower, upper, _ = self.factors(channels)
    return jnp.matmul(lower, upper, precision=_HIGHEST)

  def forward(self, x, context=None, *, train=False):
    del context, train
    channels = x.shape[-1]
    _, _, log_s = self.factors(channels)
    z = jnp.matmul(x.astype(jnp.float32), self.weight(channels), precision=_HIGHEST)
    return z, jnp.full(x.shape[:1], math.prod(x.shape[1:-1]) * log_s.sum())

  def inverse(self, z, context=None, *, train=False):
    del context, train
    channels = z.shape[-1]
    lower, upper, log_s = self.factors(channels)
    # W^-1 = (U + diag)^-1 L^-1, each a triangular solve.
    eye = jnp.eye(channels)
    lower_inv = jax.scipy.linalg.solve_triangular(lower, eye, lower=True, unit_diagonal=True)
    w_inv = jax.scipy.linalg.solve_triangular(upper, lower_inv, lower=False)
    x = jnp.matmul(z.astype(jnp.float32), w_inv, precision=_HIGHEST)
    return x, jnp.full(z.shape[:1], -math.prod(z.shape[1:-1]) * log_s.sum())


class Squeeze(nn.Module):
  """`squeeze` as a flow, [B, H, W, C] -> [B, H/2, W/2, 4C], logdet 0."""

  def forward(self, x, context=None, *, train=False):
    del context, train
    return squeeze(x), jnp.zeros(x.shape[:1], jnp.float32)

  def inverse(self, z, context=None, *, train=False):
    del context, train
    return unsqueeze(z), jnp.zeros(z.shape[:1], jnp.float32)


class Unsqueeze(nn.Module):
  """`unsqueeze` as a flow, [B, H, W, 4C] -> [B, 2H, 2W, C], logdet 0."""

  def forward(self, x, context=None, *, train=False):
    del context, train
    return unsqueeze(x), jnp.zeros(x.shape[:1], jnp.float32)

  def inverse(self, z, context=None, *, train=False):
    del context, train
    return squeeze(z), jnp.zeros(z.shape[:1], jnp.float32)


class Reshape(nn.Module):
  """x [B, *in_shape] -> [B, *out_shape] (e.g. images to NICE's vectors), logdet 0."""
  in_shape: tuple[int, ...]
  out_shape: tuple[int, ...]

  def forward(self, x, context=None, *, train=False):
    del context, train
    return x.reshape(x.shape[0], *self.out_shape), jnp.zeros(x.shape[:1], jnp.float32)

  def inverse(self, z, context=None, *, train=False):
    del context, train
    return z.reshape(z.shape[0], *self.in_shape), jnp.zeros(z.shape[:1], jnp.float32)


class Chain(nn.Module):
  """The composition layers[-1] o ... o layers[0]; logdets add up.

  A context follows the resolution of the data: each `Squeeze` (`Unsqueeze`) in the
  chain squeezes (unsqueezes) the context the layers after it see.

  Attributes:
    layers: flows applied in order by `forward`, in reverse order by `inverse`.
  """
  layers: Sequence[nn.Module]

  def _contexts(self, context: jax.Array | None) -> list[jax.Array | None]:
    """The context at each layer's data-side resolution."""
    contexts = []
    for layer in self.layers:
      contexts.append(context)
      if context is not None and isinstance(layer, Squeeze):
        context = squeeze(context)
      elif context is not None and isinstance(layer, Unsqueeze):
        context = unsqueeze(context)
    return contexts

  def forward(self, x, context=None, *, train=False):
    logdet = jnp.zeros(x.shape[:1], jnp.float32)
    for layer, c in zip(self.layers, self._contexts(context)):
      x, ld = layer.forward(x, c, train=train)
      logdet = logdet + ld
    return x, logdet

  def inverse(self, z, context=None, *, train=False):
    logdet = jnp.zeros(z.shape[:1], jnp.float32)
    for layer, c in reversed(list(zip(self.layers, self._contexts(context)))):
      z, ld = layer.inverse(z, c, train=train)
      logdet = logdet + ld
    return z, logdet


class FactorOut(nn.Module):
  """Multi-scale factor-out (Dinh et al. 2017, Sec. 3.6): half the channels stop here.

  forward(x) = concat(x[..., :C/2], inner.forward(x[..., C/2:])): the first
  floor(C/2) channels go to the base density unchanged, `inner` (the next scales)
  transforms the rest, and z keeps x's shape, so a multi-scale model maps
  [B, H, W, C] to a z of the same shape. Glow's learned prior for the factored half
  is a channel `Coupling` placed just before this layer.

  Attributes:
    inner: the flow applied to the kept half.
  """
  inner: nn.Module

  def forward(self, x, context=None, *, train=False):
    k = x.shape[-1] // 2
    z, logdet = self.inner.forward(x[..., k:], context, train=train)
    return jnp.concatenate([x[..., :k], z], axis=-1), logdet

  def inverse(self, z, context=None, *, train=False):
    k = z.shape[-1] // 2
    x, logdet = self.inner.inverse(z[..., k:], context, train=train)
    return jnp.concatenate([z[..., :k], x], axis=-1), logdet


class Repeat(nn.Module):
  """`length` copies of `layer`, each with its own parameters, applied in sequence.

  The copies' parameters are stacked on a leading axis and the stack runs as one
  `nn.scan` (reversed for the inverse), so a deep flow compiles one layer, not
  `length`; `remat` recomputes each layer's activations in the backward pass
  instead of storing them (memory O(1) in depth, one more forward pass of compute).
  Context, if any, is the same for every copy.

  `unroll` copies of the layer run per loop iteration (as `jax.lax.scan`'s unroll). The
  default, None, unrolls the whole stack on a CPU and keeps it rolled elsewhere: XLA's
  CPU backend runs a rolled loop of flow steps several times slower (a 2 scales x 4
  steps Glow train step on 2 cores: 0.48-0.52 s rolled, 0.06-0.08 s unrolled, compile
  10 s against 12 s), while on an accelerator the rolled loop keeps compile time flat in
  depth. The parameters and the function are the same either way. The slow part is the
  coupling networks' convolution gradients, which fall off XLA:CPU's fast path inside a
  loop body (`dulx.nn.conv`): with `dulx.nn.Conv` in Glow's network the rolled step ran as
  fast as the unrolled one (2 x 4 steps, 64 channels, batch 16: 19 ms against 18 ms; with
  `nn.Conv` 155 ms against 18 ms), but that convolution has no forward mode, and the
  flows keep `jax.jvp`/`jacfwd`, so they unroll instead.

  Attributes:
    layer: the flow to repeat; every copy must map a shape to itself.
    length: number of copies (>= 1).
    remat: rematerialise each copy in the backward pass.
    unroll: copies per loop iteration (>= 1), or None for the backend's default.
  """
  layer: nn.Module
  length: int
  remat: bool = False
  unroll: int | None = None

  def _unroll(self) -> int:
    if self.unroll is None:
      return self.length if jax.default_backend() == 'cpu' else 1
    return max(1, min(self.unroll, self.length))

  def _scan(self, inverse: bool, train: bool):
    def body(layer, x, context):
      x, logdet = (layer.inverse if inverse else layer.forward)(x, context, train=train)
      return x, logdet
    if self.remat:
      body = nn.remat(body, prevent_cse=False)
    return nn.scan(body, variable_axes={'params': 0, 'batch_stats': 0},
                   split_rngs={'params': True}, in_axes=nn.broadcast,
                   length=self.length, reverse=inverse, unroll=self._unroll())

  def forward(self, x, context=None, *, train=False):
    x, logdets = self._scan(False, train)(self.layer, x, context)
    return x, logdets.sum(axis=0)

  def inverse(self, z, context=None, *, train=False):
    z, logdets = self._scan(True, train)(self.layer, z, context)
    return z, logdets.sum(axis=0)
