"""Autoregressive flows: MAF (Papamakarios et al. 2017) and IAF (Kingma et al. 2016).

One layer transforms each of the D dimensions by an invertible elementwise map
tau(.; h_d) whose parameters h_d come from a MADE (`dulx.nn.MaskedDense` with the
degrees of `dulx.models.autoregressive.made.MADE`) of the dimensions before d in
the layer's ordering. The two flows differ in which side the MADE reads:

    MAF  z_d = tau(x_d; h_d(x_<d))     density x -> z in one pass, sampling D passes
    IAF  z_d = tau(x_d; h_d(z_<d))     sampling z -> x in one pass, density D passes

Either way the Jacobian dz/dx is triangular in the ordering, so
log |det dz/dx| = sum_d log |tau'(x_d; h_d)|. The sequential direction solves for
the other side by D passes of the MADE: after pass t the first t dimensions of the
ordering are exact, so D passes (one compiled `fori_loop`) give the exact answer, and
the last pass's parameters give its logdet.

Transforms tau (data side -> noise side):
  affine   z = (x - mu) exp(-alpha), alpha = A tanh(a / A) bounded by A = `max_log_scale`
           (MAF Eq. 4; IAF's sigma = exp(alpha));
  spline   a monotone rational-quadratic spline of K bins on [-B, B], identity outside
           (Durkan et al. 2019, "Neural Spline Flows", Sec. 3.1, with linear tails).

Layers alternate between the natural and the reversed ordering, so each dimension is
conditioned on every other one across two layers. The base density is N(0, I).

Images (discrete levels) are flattened to D = H * W * C, dequantized with uniform noise
from the 'dequantize' rng and mapped to logit space (`dulx.models.flows.base`), with
every Jacobian counted, so bits/dim compare with the literature (MAF: Table 2).
A class-conditional flow (`num_classes` set) feeds a learned label embedding to every
MADE through unmasked weights.
"""

import math
from typing import Any, Literal, TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dulx.models import (check_event_shape, condition_classes, require_choice, require_int,
                         require_number, require_positive_sizes)
from dulx.models.autoregressive.made import MADE
from dulx.models.flows import base
from dulx.nn import MaskedDense

if TYPE_CHECKING:
  from dulx.data import DatasetInfo

__all__ = ['AutoregressiveFlow', 'AutoregressiveLayer', 'BUILDERS', 'MADEConditioner',
           'TRANSFORMS', 'affine', 'build_iaf', 'build_maf', 'from_flow_space',
           'rational_quadratic_spline', 'to_flow_space']

TRANSFORMS = ('affine', 'spline')
_MIN_BIN = 1e-3
_MIN_DERIVATIVE = 1e-3
# softplus(raw + _DERIVATIVE_SHIFT) + _MIN_DERIVATIVE = 1 at raw = 0: a zero-initialised
# conditioner starts every spline at the identity, as it starts the affine map.
_DERIVATIVE_SHIFT = math.log(math.expm1(1.0 - _MIN_DERIVATIVE))


def affine(x: jax.Array, params: jax.Array, *, max_log_scale: float,
           inverse: bool = False) -> tuple[jax.Array, jax.Array]:
  """z = (x - mu) exp(-alpha), or its inverse x = z exp(alpha) + mu.

  Args:
    x: [...] float32 (the data side; the noise side when `inverse`).
    params: [..., 2] float32: mu and the raw log-scale a, alpha = A tanh(a / A).
    max_log_scale: A > 0, the bound on |alpha|.
    inverse: map noise -> data instead.

  Returns:
    The image [...] and the elementwise log |derivative| [...] of the map applied.
  """
  shift = params[..., 0]
  log_scale = max_log_scale * jnp.tanh(params[..., 1] / max_log_scale)
  if inverse:
    return x * jnp.exp(log_scale) + shift, log_scale
  return (x - shift) * jnp.exp(-log_scale), -log_scale


def rational_quadratic_spline(x: jax.Array, params: jax.Array, *, tail_bound: float,
                              inverse: bool = False) -> tuple[jax.Array, jax.Array]:
  """A monotone rational-quadratic spline on [-B, B], the identity outside.

  K bins with knots (x_k, y_k) and derivatives d_k at the knots (Durkan et al. 2019,
  Eqs. 4 and 6): in bin k, with xi = (x - x_k) / w_k and s_k = h_k / w_k,

      y = y_k + h_k [s_k xi^2 + d_k xi (1 - xi)] / [s_k + (d_k+1 + d_k - 2 s_k) xi (1 - xi)],

  and the inverse is the root in [0, 1] of a quadratic in xi (their Eq. 29). Widths and
  heights are softmaxes (each at least 1e-3 of the interval); interior derivatives are
  softplus (at least 1e-3); the two end derivatives are 1, so the map is C^1 with the
  identity tails.

  Args:
    x: [...] float32 (the data side; the noise side when `inverse`).
    params: [..., 3K - 1] float32: K raw widths, K raw heights, K - 1 raw derivatives.
    tail_bound: B > 0.
    inverse: map noise -> data instead.

  Returns:
    The image [...] and the elementwise log |derivative| [...] of the map applied.
  """
  k = (params.shape[-1] + 1) // 3
  raw_widths, raw_heights, raw_derivatives = params[..., :k], params[..., k:2 * k], params[..., 2 * k:]

  def knots(raw):
    sizes = _MIN_BIN + (1.0 - _MIN_BIN * k) * jax.nn.softmax(raw, axis=-1)
    cumulative = jnp.concatenate([jnp.zeros_like(sizes[..., :1]), jnp.cumsum(sizes, axis=-1)], -1)
    positions = tail_bound * (2.0 * cumulative - 1.0)
    # Pin the ends exactly: rounding in cumsum must not open a gap at +-B.
    return positions.at[..., 0].set(-tail_bound).at[..., -1].set(tail_bound)

  xs, ys = knots(raw_widths), knots(raw_heights)
  ones = jnp.ones_like(raw_derivatives[..., :1])
  derivatives = jnp.concatenate(
      [ones, _MIN_DERIVATIVE + jax.nn.softplus(raw_derivatives + _DERIVATIVE_SHIFT), ones], -1)

  inside = jnp.abs(x) < tail_bound
  v = jnp.clip(x, -tail_bound, tail_bound)  # Keeps the unused branch of `where` finite.
  edges = ys if inverse else xs
  bin_index = jnp.sum(v[..., None] >= edges[..., 1:-1], axis=-1, keepdims=True)

  def at(table, shift=0):
    return jnp.take_along_axis(table, bin_index + shift, axis=-1)[..., 0]

  x_k, y_k = at(xs), at(ys)
  width, height = at(xs, 1) - x_k, at(ys, 1) - y_k
  d_k, d_k1 = at(derivatives), at(derivatives, 1)
  slope = height / width
  curvature = d_k1 + d_k - 2.0 * slope
  if inverse:
    dy = v - y_k
    a = height * (slope - d_k) + dy * curvature
    b = height * d_k - dy * curvature
    c = -slope * dy
    xi = 2.0 * c / (-b - jnp.sqrt(jnp.maximum(b * b - 4.0 * a * c, 0.0)))
    out = x_k + xi * width
  else:
    xi = (v - x_k) / width
    out = y_k + height * (slope * xi * xi + d_k * xi * (1.0 - xi)) / (slope + curvature * xi * (1.0 - xi))
  one_minus = 1.0 - xi
  denominator = slope + curvature * xi * one_minus
  log_derivative = (2.0 * jnp.log(slope)
                    + jnp.log(d_k1 * xi * xi + 2.0 * slope * xi * one_minus + d_k * one_minus * one_minus)
                    - 2.0 * jnp.log(denominator))
  if inverse:
    log_derivative = -log_derivative
  return jnp.where(inside, out, x), jnp.where(inside, log_derivative, 0.0)


def to_flow_space(rng: jax.Array | None, x: jax.Array, num_levels: int | None,
                  alpha: float) -> tuple[jax.Array, jax.Array | float]:
  """The input of a flow over `x`, and the log-Jacobian to add to the flow's log p.

  Continuous points pass unchanged (term 0). Discrete levels are dequantized and
  mapped to logit space, w = logit(alpha + (1 - 2 alpha) (x + u) / L), u ~ U[0, 1)^D
  from `rng`; the term is the logit map's log-Jacobian minus D log L, so that
  log p_flow(w) + term is a one-sample estimate of a lower bound on log P(x)
  (`dulx.models.flows.base`).

  Args:
    rng: PRNG key of the dequantization noise (unused for continuous data).
    x: [B, ...] int levels in [0, num_levels), or float points.
    num_levels: L, or None for continuous data.
    alpha: the logit map's margin.

  Returns:
    w: [B, ...] float32, and the term: [B] float32 (discrete) or 0.0.
  """
  if num_levels is None:
    return x.astype(jnp.float32), 0.0
  v = base.dequantize_uniform(rng, x, num_levels)
  w, logit_logdet = base.logit_preprocess(v, alpha)
  return w, logit_logdet + base.discrete_log_prob_offset(math.prod(x.shape[1:]), num_levels)


def from_flow_space(w: jax.Array, num_levels: int | None, alpha: float) -> jax.Array:
  """The inverse of `to_flow_space`: int32 levels for discrete data (the level each value falls in), else w."""
  if num_levels is None:
    return w
  return base.levels_from_unit(base.logit_postprocess(w, alpha), num_levels)


class MADEConditioner(nn.Module):
  """The parameters of every dimension's transform, each from the dimensions before it.

  A MADE (Germain et al. 2015) with P outputs per dimension: the hidden and output
  masks are MADE's (`MADE.masks`, degrees from `order` and `mask_seed`), the layers
  `MaskedDense`. The output layer starts at zero, so every transform starts at the
  identity. A context vector (e.g. a label embedding) enters every layer through
  unmasked weights: it is not one of the D dimensions, so every output may see it.

  Attributes:
    num_dims: D.
    params_per_dim: P.
    hidden_sizes: widths of the ReLU hidden layers.
    order: the ordering, a permutation of range(D).
    mask_seed: seed of the hidden degrees.
    dtype: computation dtype (the output is float32).
  """
  num_dims: int
  params_per_dim: int
  hidden_sizes: tuple[int, ...]
  order: tuple[int, ...]
  mask_seed: int = 0
  dtype: Any = jnp.float32

  def masks(self) -> list[np.ndarray]:
    """The [in, out] masks of the hidden layers and the output layer (outputs d-major)."""
    made = MADE(event_shape=(self.num_dims,), num_levels=self.params_per_dim,
                hidden_sizes=self.hidden_sizes, order=self.order, mask_seed=self.mask_seed,
                likelihood='categorical')
    with jax.ensure_compile_time_eval():
      return [np.asarray(m) for m in made.masks()]

  @nn.compact
  def __call__(self, u: jax.Array, context: jax.Array | None = None) -> jax.Array:
    """[B, D] float (and [B, E] context) -> [B, D, P] float32; output d sees u_<d only."""
    masks = self.masks()
    h = u.astype(self.dtype)
    for i, mask in enumerate(masks):
      last = i == len(masks) - 1
      init = nn.initializers.zeros_init() if last else nn.initializers.lecun_normal()
      h = MaskedDense(mask.shape[1], dtype=self.dtype, kernel_init=init)(h, jnp.asarray(mask))
      if context is not None:
        h = h + nn.Dense(mask.shape[1], use_bias=False, dtype=self.dtype, kernel_init=init)(context)
      if not last:
        h = nn.relu(h)
    return h.reshape(u.shape[0], self.num_dims, self.params_per_dim).astype(jnp.float32)


class AutoregressiveLayer(nn.Module):
  """One MAF or IAF layer on [B, D] (see the module docstring).

  Attributes:
    num_dims: D.
    kind: 'maf' (the MADE reads the data side) or 'iaf' (it reads the noise side).
    order: the layer's ordering, a permutation of range(D).
    hidden_sizes: the MADE's hidden widths.
    transform: 'affine' or 'spline'.
    num_bins: K, spline bins.
    tail_bound: B, the spline's interval [-B, B].
    max_log_scale: the affine map's bound on |log-scale|.
    mask_seed: seed of the MADE's hidden degrees.
    dtype: the MADE's computation dtype.
  """
  num_dims: int
  kind: str
  order: tuple[int, ...]
  hidden_sizes: tuple[int, ...]
  transform: str = 'affine'
  num_bins: int = 8
  tail_bound: float = 5.0
  max_log_scale: float = 3.0
  mask_seed: int = 0
  dtype: Any = jnp.float32

  def setup(self):
    params_per_dim = 2 if self.transform == 'affine' else 3 * self.num_bins - 1
    self.conditioner = MADEConditioner(self.num_dims, params_per_dim, tuple(self.hidden_sizes),
                                       tuple(self.order), self.mask_seed, self.dtype)

  def _tau(self, u: jax.Array, params: jax.Array, inverse: bool) -> tuple[jax.Array, jax.Array]:
    if self.transform == 'affine':
      return affine(u, params, max_log_scale=self.max_log_scale, inverse=inverse)
    return rational_quadratic_spline(u, params, tail_bound=self.tail_bound, inverse=inverse)

  def _one_pass(self, given: jax.Array, reads: jax.Array, context: jax.Array | None,
                inverse: bool) -> tuple[jax.Array, jax.Array]:
    out, log_derivative = self._tau(given, self.conditioner(reads, context), inverse)
    return out, log_derivative.sum(axis=-1)

  def _solve(self, given: jax.Array, context: jax.Array | None,
             inverse: bool) -> tuple[jax.Array, jax.Array]:
    """out with out = tau(given; h(out)) (or tau^-1 when `inverse`), by D passes.

    The first pass is outside the loop, where `init` creates the MADE's parameters.
    """
    first = self._one_pass(given, jnp.zeros_like(given), context, inverse)
    step = lambda _, carry: self._one_pass(given, carry[0], context, inverse)
    return jax.lax.fori_loop(1, self.num_dims, step, first)

  def forward(self, x: jax.Array, context: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Data -> noise: [B, D] -> ([B, D] float32, logdet [B] = log |det dz/dx|)."""
    if self.kind == 'maf':
      return self._one_pass(x, x, context, inverse=False)
    return self._solve(x, context, inverse=False)

  def inverse(self, z: jax.Array, context: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Noise -> data: [B, D] -> ([B, D] float32, logdet [B] = log |det dx/dz|)."""
    if self.kind == 'iaf':
      return self._one_pass(z, z, context, inverse=True)
    return self._solve(z, context, inverse=True)


class AutoregressiveFlow(nn.Module):
  """A stack of MAF or IAF layers with a standard normal base, as a likelihood model.

  `forward`/`inverse` act on the flow's continuous space, [B, *event_shape]: the
  points themselves for continuous data, logit(alpha + (1 - 2 alpha) v) of the
  dequantized v in [0, 1) for discrete data. `log_prob` and `sample` add the
  dequantization and the logit map.

  Attributes:
    event_shape: shape of one example; D = its size, flattened in C order.
    num_levels: L for discrete data (dequantized), None for continuous points.
    num_classes: number of classes when class-conditional, else None.
    dtype: computation dtype of the MADEs (transforms and densities are float32).
    kind: 'maf' or 'iaf'.
    num_layers: number of autoregressive layers (even layers: natural order, odd: reversed).
    hidden_sizes: widths of every MADE's hidden layers.
    transform: 'affine' or 'spline'.
    num_bins: spline bins.
    tail_bound: the splines' interval [-B, B].
    max_log_scale: the affine maps' bound on |log-scale|.
    alpha: the logit map's margin for discrete data.
    embedding_size: size of the label embedding of a class-conditional flow.
  """
  event_shape: tuple[int, ...]
  num_levels: int | None = None
  num_classes: int | None = None
  dtype: Any = jnp.float32
  kind: str = 'maf'
  num_layers: int = 5
  hidden_sizes: tuple[int, ...] = (512, 512)
  transform: str = 'affine'
  num_bins: int = 8
  tail_bound: float = 5.0
  max_log_scale: float = 3.0
  alpha: float = 0.05
  embedding_size: int = 32

  @property
  def num_dims(self) -> int:
    return math.prod(self.event_shape)

  @property
  def latent_bounds(self) -> tuple[float, float]:
    """A range holding nearly all of the N(0, I) base: for pictures of the latent space."""
    return -4.0, 4.0

  def setup(self):
    if self.kind not in BUILDERS:
      raise ValueError(f'kind must be one of {tuple(BUILDERS)}, got {self.kind!r}.')
    if self.transform not in TRANSFORMS:
      raise ValueError(f'transform must be one of {TRANSFORMS}, got {self.transform!r}.')
    natural = tuple(range(self.num_dims))
    self.flow_layers = [
        AutoregressiveLayer(self.num_dims, self.kind, natural if i % 2 == 0 else natural[::-1],
                            tuple(self.hidden_sizes), self.transform, self.num_bins,
                            self.tail_bound, self.max_log_scale, mask_seed=i, dtype=self.dtype)
        for i in range(self.num_layers)]
    if self.num_classes is not None:
      self.embedding = nn.Embed(self.num_classes, self.embedding_size)

  def _context(self, y: jax.Array | None) -> jax.Array | None:
    if self.num_classes is None:
      return None
    if y is None:
      raise ValueError(f'this {self.kind.upper()} is class-conditional: pass labels y [B].')
    return self.embedding(y).astype(self.dtype)

  def forward(self, x: jax.Array, y: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Data -> noise through every layer.

    Args:
      x: [B, *event_shape] float, the flow's continuous space.
      y: [B] int labels when class-conditional.

    Returns:
      z: [B, *event_shape] float32, and logdet [B] = log |det dz/dx|.
    """
    check_event_shape(x, self.event_shape)
    context = self._context(y)
    h = x.reshape(x.shape[0], self.num_dims).astype(jnp.float32)
    logdet = jnp.zeros(x.shape[0], jnp.float32)
    for layer in self.flow_layers:
      h, layer_logdet = layer.forward(h, context)
      logdet = logdet + layer_logdet
    return h.reshape(x.shape), logdet

  def inverse(self, z: jax.Array, y: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Noise -> data through every layer in reverse: shapes as `forward`, logdet = log |det dx/dz|."""
    check_event_shape(z, self.event_shape)
    context = self._context(y)
    h = z.reshape(z.shape[0], self.num_dims).astype(jnp.float32)
    logdet = jnp.zeros(z.shape[0], jnp.float32)
    for layer in reversed(self.flow_layers):
      h, layer_logdet = layer.inverse(h, context)
      logdet = logdet + layer_logdet
    return h.reshape(z.shape), logdet

  @property
  def log_prob_is_bound(self) -> bool:
    """Whether `log_prob` is one draw of a stochastic lower bound on log P(x) (the
    dequantization bound), which `dulx.eval.importance` tightens: read by the harness."""
    return self.num_levels is not None

  def __call__(self, x: jax.Array, y: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """A flow has no per-dimension outputs: its one pass is `log_prob`."""
    return self.log_prob(x, y, train=train)

  def log_prob(self, x: jax.Array, y: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """log p(x) in nats: [B] float32.

    Continuous data: log N(z; 0, I) + log |det dz/dx|. Discrete data: the same of
    w = logit(alpha + (1 - 2 alpha) (x + u) / L), u ~ U[0, 1)^D from the 'dequantize'
    rng, plus the logit map's log-Jacobian and -D log L: a one-sample estimate of a
    lower bound on log P(x) (see `dulx.models.flows.base`).

    Args:
      x: [B, *event_shape]: int levels in [0, num_levels), or float points.
      y: [B] int labels when class-conditional; ignored otherwise.
      train: unused (the noise is drawn in training and evaluation alike).
    """
    del train
    check_event_shape(x, self.event_shape)
    rng = None if self.num_levels is None else self.make_rng('dequantize')
    w, extra = to_flow_space(rng, x, self.num_levels, self.alpha)
    z, logdet = self.forward(w, y)
    return base.standard_normal_log_prob(z) + logdet + extra

  def sample(self, rng: jax.Array, num: int, y: jax.Array | None = None,
             temperature: float | jax.Array = 1.0) -> jax.Array:
    """x = inverse(z), z ~ N(0, temperature^2 I).

    Returns:
      [num, *event_shape]: int32 levels in [0, num_levels) for discrete data (the
      level each dequantized value falls in), float32 points otherwise.
    """
    z = temperature * jax.random.normal(rng, (num, *self.event_shape), jnp.float32)
    return from_flow_space(self.inverse(z, y)[0], self.num_levels, self.alpha)


def _build(kind: str, info: 'DatasetInfo', dtype: Any, num_layers: int,
           hidden_sizes: tuple[int, ...], transform: str, num_bins: int, tail_bound: float,
           conditional: bool) -> AutoregressiveFlow:
  name = kind.upper()
  tail_bound = require_number('tail_bound', tail_bound)
  return AutoregressiveFlow(
      event_shape=tuple(info.shape), num_levels=info.num_levels,
      num_classes=condition_classes(info, conditional, name), dtype=dtype, kind=kind,
      num_layers=require_int('num_layers', num_layers),
      hidden_sizes=require_positive_sizes('hidden_sizes', hidden_sizes),
      transform=require_choice('transform', transform, TRANSFORMS),
      num_bins=require_int('num_bins', num_bins, minimum=2), tail_bound=tail_bound)


def build_maf(info: 'DatasetInfo', *, dtype: Any = jnp.float32, num_layers: int = 5,
              hidden_sizes: tuple[int, ...] = (512, 512),
              transform: Literal['affine', 'spline'] = 'affine', num_bins: int = 8,
              tail_bound: float = 5.0, conditional: bool = False) -> AutoregressiveFlow:
  """MAF: a masked autoregressive flow for continuous points or dequantized images.

  Args:
    info: metadata of a continuous dataset, or a discrete one (dequantized, logit space).
    dtype: computation dtype of the MADEs.
    num_layers: autoregressive layers (>= 1), orderings alternating natural/reversed.
    hidden_sizes: widths of every MADE's hidden layers (each >= 1; none: linear MADEs).
    transform: 'affine' (bounded log-scale) or 'spline' (rational-quadratic).
    num_bins: spline bins (>= 2).
    tail_bound: splines act on [-tail_bound, tail_bound] (> 0), the identity outside.
    conditional: condition on the class label (needs a labelled dataset).
  """
  return _build('maf', info, dtype, num_layers, hidden_sizes, transform, num_bins, tail_bound,
                conditional)


def build_iaf(info: 'DatasetInfo', *, dtype: Any = jnp.float32, num_layers: int = 5,
              hidden_sizes: tuple[int, ...] = (512, 512),
              transform: Literal['affine', 'spline'] = 'affine', num_bins: int = 8,
              tail_bound: float = 5.0, conditional: bool = False) -> AutoregressiveFlow:
  """IAF: an inverse autoregressive flow (fast sampling; its density takes D passes per layer).

  Args:
    info: metadata of a continuous dataset, or a discrete one (dequantized, logit space).
    dtype: computation dtype of the MADEs.
    num_layers: autoregressive layers (>= 1), orderings alternating natural/reversed.
    hidden_sizes: widths of every MADE's hidden layers (each >= 1; none: linear MADEs).
    transform: 'affine' (bounded log-scale) or 'spline' (rational-quadratic).
    num_bins: spline bins (>= 2).
    tail_bound: splines act on [-tail_bound, tail_bound] (> 0), the identity outside.
    conditional: condition on the class label (needs a labelled dataset).
  """
  return _build('iaf', info, dtype, num_layers, hidden_sizes, transform, num_bins, tail_bound,
                conditional)


BUILDERS = {'maf': build_maf, 'iaf': build_iaf}
