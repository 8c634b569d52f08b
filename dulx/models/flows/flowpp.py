"""Flow++ (Ho, Chen, Srinivas, Duan & Abbeel 2019, "Flow++: Improving Flow-Based Generative
Models with Variational Dequantization and Architecture Design").

Three changes to RealNVP/Glow, each a part of this file:

- Mixture-logistic CDF couplings (Sec. 3.2), `MixtureLogisticCoupling`: the transformed
  half goes through the CDF of a K-component logistic mixture, its logit, and an affine
  map, all parameterised by a network of the kept half,

      z_t = exp(a) * logit(MixLogCDF(x_t; pi, mu, s)) + b.

- Self-attention in the coupling networks (Sec. 3.3), `AttentionNet`: blocks of a gated
  residual convolution and gated multi-head self-attention over the H*W positions, each
  followed by layer normalisation.
- Variational dequantization (Sec. 3.1), `FlowppDequantizer`: q(u | x) is a flow of the
  same mixture-logistic attention couplings, conditioned on features of x, ending in a
  sigmoid (`dequantization.VariationalDequantizer`).

The architecture (the paper's CIFAR-10 model, scaled by options) is

    [norm, 1x1 conv, checkerboard coupling] x num_checkerboard          at H x W x C
    squeeze
    [norm, 1x1 conv, channel coupling] x num_channel                    at H/2 x W/2 x 4C
    [norm, 1x1 conv, checkerboard coupling] x num_checkerboard_squeezed
    unsqueeze

with parities alternating within each group; "norm" is Glow's actnorm and "1x1 conv"
its LU-decomposed invertible 1x1 convolution (the paper's "Norm, Pointwise"). z has the
image's shape and a standard normal prior (`image_flow.ImageFlow`).
"""

from typing import Any, Literal, TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from dulx.errors import ConfigError
from dulx.models import condition_classes, require_int, require_multiple, require_rate
from dulx.models.flows.cdf_flow import bisect, mixture_log_density
from dulx.models.flows.dequantization import VariationalDequantizer
from dulx.models.flows.image_flow import ImageFlow, image_flow_fields, require_squeezable
from dulx.models.flows.layers import ActNorm, Chain, Coupling, Invertible1x1Conv, Squeeze
from dulx.models.flows.layers import Unsqueeze, checkerboard

if TYPE_CHECKING:
  from dulx.data import DatasetInfo

__all__ = ['AttentionNet', 'FlowPP', 'FlowppDequantizer', 'MixtureLogisticCoupling',
           'build', 'concat_elu', 'mixture_logistic_logit']

# Components narrower than e^-7 let the CDF step over float32's resolution of x and
# make the density of a training point unbounded.
_MIN_LOG_SCALE = -7.0
# Halvings of the inverse's bracket: its width (the means' spread plus 2 s (|y| + 1)) is
# O(100), so 40 reach 100 / 2^41 ~ 5e-11, below float32's spacing; the loop then stops moving.
_BISECTION_STEPS = 40


def concat_elu(x: jax.Array) -> jax.Array:
  """elu([x, -x]) on the last axis: [..., F] -> [..., 2F] (PixelCNN++'s nonlinearity)."""
  return nn.elu(jnp.concatenate([x, -x], axis=-1))


class AttentionNet(nn.Module):
  """Flow++'s coupling network (Sec. 3.3): gated convolutions and gated self-attention.

    h = conv3x3([x_kept, context])
    num_blocks times:
      h = LayerNorm(h + gate(dropout(concat_elu(conv3x3(concat_elu(h))))))    gated conv
      h = LayerNorm(h + gate(dropout(MultiHeadSelfAttention(h))))             gated attention
    out = conv3x3(concat_elu(h)), zero-initialised

  where gate([a, b]) = a * sigmoid(b) after a 1x1 convolution to twice the features
  (the paper's "Gate"), and the attention is non-causal over the H*W positions (a
  coupling's network may see all of the kept half), its queries, keys and values one
  1x1 projection of h (the gate's 1x1 convolution is its output projection): two weight
  matrices where flax's MultiHeadDotProductAttention has four, and on a CPU each
  initialiser's random draw costs ~0.5 s of XLA compilation. Dropout (rate `dropout`,
  'dropout' rng) acts only when `train`.

  Attributes:
    hidden: features of every block; divisible by num_heads.
    num_blocks: conv + attention blocks.
    num_heads: attention heads.
    dropout: dropout rate in the blocks, in [0, 1).
    dtype: computation dtype.
  """
  hidden: int
  num_blocks: int = 2
  num_heads: int = 4
  dropout: float = 0.0
  dtype: Any = jnp.float32

  def _gated_residual(self, h: jax.Array, r: jax.Array, train: bool) -> jax.Array:
    """LayerNorm(h + gate(dropout(r))): [..., F] -> [..., hidden]."""
    r = nn.Dropout(self.dropout)(r, deterministic=not train)
    r = nn.Dense(2 * self.hidden, dtype=self.dtype)(r)
    a, b = jnp.split(r, 2, axis=-1)
    return nn.LayerNorm(dtype=self.dtype)(h + a * nn.sigmoid(b))

  @nn.compact
  def __call__(self, x: jax.Array, num_out: int, context: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """x: [B, H, W, C] kept part, context: [B, H, W, F] or None -> [B, H, W, num_out] float32."""
    h = x if context is None else jnp.concatenate([x, context.astype(x.dtype)], -1)
    h = nn.Conv(self.hidden, (3, 3), dtype=self.dtype)(h.astype(self.dtype))
    b, height, width, _ = h.shape
    head_features = self.hidden // self.num_heads
    for _ in range(self.num_blocks):
      r = concat_elu(nn.Conv(self.hidden, (3, 3), dtype=self.dtype)(concat_elu(h)))
      h = self._gated_residual(h, r, train)
      qkv = nn.DenseGeneral((3, self.num_heads, head_features), dtype=self.dtype)(h)
      q, k, v = (t.reshape(b, height * width, self.num_heads, head_features)
                 for t in jnp.moveaxis(qkv, -3, 0))
      r = nn.dot_product_attention(q, k, v, dtype=self.dtype).reshape(h.shape)
      h = self._gated_residual(h, r, train)
    out = nn.Conv(num_out, (3, 3), dtype=self.dtype, kernel_init=nn.initializers.zeros)(
        concat_elu(h))
    return out.astype(jnp.float32)


def mixture_logistic_logit(x: jax.Array, logits: jax.Array, means: jax.Array,
                           log_scales: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """logit of the logistic-mixture CDF c = sum_k pi_k sigmoid((x - mu_k) / s_k), in log space.

    log c     = logsumexp_k [log pi_k + log sigmoid(u_k)]
    log (1-c) = logsumexp_k [log pi_k + log sigmoid(-u_k)],   u_k = (x - mu_k) / s_k

  exact in the tails, where c rounds to 0 or 1 in float32.

  Args:
    x: [...] float32 points.
    logits, means, log_scales: [..., K] float32, pi = softmax(logits), s = exp(log_scales).

  Returns:
    (logit c, log c, log (1 - c)), each [...] float32.
  """
  u = (x[..., None] - means) * jnp.exp(-log_scales)
  log_pi = jax.nn.log_softmax(logits, axis=-1)
  log_c = jax.nn.logsumexp(log_pi + jax.nn.log_sigmoid(u), axis=-1)
  log_1mc = jax.nn.logsumexp(log_pi + jax.nn.log_sigmoid(-u), axis=-1)
  return log_c - log_1mc, log_c, log_1mc


class MixtureLogisticCoupling(Coupling):
  """Flow++'s mixture-logistic CDF coupling (Ho et al. 2019, Sec. 3.2).

  With (pi, mu, s, a, b) = conditioner(x_k, context) per transformed element (K
  mixture logits, means and log-scales, and a log-scale and shift):

    z_t = exp(a) * logit(MixLogCDF(x_t; pi, mu, s)) + b
    logdet = sum [log MixLogPDF(x_t; pi, mu, s) - log c - log(1 - c) + a],  c = MixLogCDF(x_t)

  and z_k = x_k. As in `layers.Coupling`, a = f * tanh(raw) is bounded, f learned per
  channel (starting at 1), and log s >= -7. With `affine=False`, a = b = 0 (the CDF's
  logit alone, still a bijection of R). The conditioner's zero-initialised output
  gives K identical standard logistics, logit(sigmoid(x)) = x: the coupling starts as
  the identity. The inverse undoes the affine map, then solves
  logit(MixLogCDF(x)) = (z - b) exp(-a) by bisection in logit space (so no sigmoid
  saturates) on a bracket that provably holds the root: for
  x >= max_k mu_k + max_k s_k (|y| + 1), every u_k >= |y| + 1, so logit c > y
  (and symmetrically below).

  Masks and parities as `layers.Coupling` ('checkerboard': the network sees x * b and
  the mask b itself, whose parity a translation-equivariant net cannot infer; entries
  where b = 1 pass unchanged; 'channel': halves of the last axis).

  Attributes (besides Coupling's):
    conditioner: called as conditioner(x_k, num_out, context, train=train), e.g. an
      `AttentionNet` (`train` switches its dropout on).
    num_components: K, logistic components per element.
    bisection_steps: halvings of the inverse's bracket.
  """
  num_components: int = 8
  bisection_steps: int = _BISECTION_STEPS

  @property
  def _params_per_element(self) -> int:
    return 3 * self.num_components + (2 if self.affine else 0)

  @nn.compact
  def _elementwise_params(self, kept: jax.Array, num_out: int, context: jax.Array | None,
                          train: bool) -> tuple[jax.Array, ...]:
    """(logits, means, log_scales [..., num_out, K], log_scale a, shift b [..., num_out])."""
    if self.mask not in ('checkerboard', 'channel'):
      raise ValueError(f'unknown coupling mask {self.mask!r}.')
    inputs = kept
    if self.mask == 'checkerboard':
      mask = jnp.broadcast_to(checkerboard(kept.shape, self.parity), (*kept.shape[:-1], 1))
      inputs = jnp.concatenate([kept, mask], -1)
    out = self.conditioner(inputs, num_out * self._params_per_element, context, train=train)
    out = out.reshape(*out.shape[:-1], num_out, self._params_per_element)
    k = self.num_components
    logits, means, log_scales = out[..., :k], out[..., k:2 * k], out[..., 2 * k:3 * k]
    log_scales = jnp.maximum(log_scales, _MIN_LOG_SCALE)
    if not self.affine:
      zeros = jnp.zeros(out.shape[:-1], jnp.float32)
      return logits, means, log_scales, zeros, zeros
    factor = self.param('log_scale_factor', nn.initializers.ones, (num_out,), jnp.float32)
    return logits, means, log_scales, factor * jnp.tanh(out[..., -2]), out[..., -1]

  def _free(self, moved: jax.Array) -> jax.Array:
    """1 where an entry of the transformed part is transformed, broadcastable to it."""
    if self.mask == 'checkerboard':
      return 1.0 - checkerboard(moved.shape, self.parity)
    return jnp.ones((1,) * moved.ndim, jnp.float32)

  def _logdet(self, x: jax.Array, mixture: tuple[jax.Array, ...], log_c: jax.Array,
              log_1mc: jax.Array, log_scale: jax.Array) -> jax.Array:
    """[B, ..., n] elementwise log |dz_t / dx_t|."""
    return mixture_log_density(x, *mixture, 'logistic') - log_c - log_1mc + log_scale

  def forward(self, x, context=None, *, train=False):
    kept, moved = self._split(x.astype(jnp.float32))
    *mixture, log_scale, shift = self._elementwise_params(kept, moved.shape[-1], context, train)
    y, log_c, log_1mc = mixture_logistic_logit(moved, *mixture)
    free = self._free(moved)
    z = jnp.where(free > 0, jnp.exp(log_scale) * y + shift, moved)
    logdet = free * self._logdet(moved, mixture, log_c, log_1mc, log_scale)
    return self._merge(kept, z), logdet.reshape(x.shape[0], -1).sum(-1)

  def inverse(self, z, context=None, *, train=False):
    kept, moved = self._split(z.astype(jnp.float32))
    *mixture, log_scale, shift = self._elementwise_params(kept, moved.shape[-1], context, train)
    logits, means, log_scales = mixture
    y = (moved - shift) * jnp.exp(-log_scale)
    reach = jnp.exp(log_scales.max(-1)) * (jnp.abs(y) + 1.0)
    low, high = means.min(-1) - reach, means.max(-1) + reach
    fn = lambda v: mixture_logistic_logit(v, logits, means, log_scales)[0]
    x = bisect(fn, y, low, high, self.bisection_steps)
    _, log_c, log_1mc = mixture_logistic_logit(x, *mixture)
    free = self._free(moved)
    logdet = free * self._logdet(x, mixture, log_c, log_1mc, log_scale)
    return self._merge(kept, jnp.where(free > 0, x, moved)), -logdet.reshape(z.shape[0], -1).sum(-1)


def _make_coupling(owner: Any, mask: str, parity: int, hidden: int, dropout: float) -> nn.Module:
  """A mixture-logistic coupling with `owner`'s blocks, heads and components."""
  net = AttentionNet(hidden, owner.num_blocks, owner.num_heads, dropout, dtype=owner.dtype)
  return MixtureLogisticCoupling(net, mask=mask, parity=parity, num_components=owner.num_components)


class FlowppDequantizer(VariationalDequantizer):
  """Flow++'s variational dequantizer (Sec. 3.1): `VariationalDequantizer` whose flow is
  `num_couplings` mixture-logistic attention couplings (checkerboard, alternating parity)
  conditioned on the features c of x:

    eps ~ N(0, I);  u = sigmoid(f(eps; c));  log q(u | x) = log N(eps) - log |det du/deps|.

  Its networks run deterministically (no dropout).

  Attributes (besides VariationalDequantizer's):
    num_blocks: blocks of each coupling's `AttentionNet`.
    num_heads: attention heads; divide `hidden`.
    num_components: K, logistic components per element.
  """
  num_blocks: int = 2
  num_heads: int = 4
  num_components: int = 8

  def make_flow(self) -> nn.Module:
    return Chain([_make_coupling(self, 'checkerboard', i % 2, self.hidden, 0.0)
                  for i in range(self.num_couplings)])


class FlowPP(ImageFlow):
  """Flow++'s flow of mixture-logistic attention couplings (see the module docstring).

  Attributes (besides ImageFlow's):
    num_checkerboard: checkerboard couplings at full resolution.
    num_channel: channel couplings after the squeeze.
    num_checkerboard_squeezed: checkerboard couplings after the channel ones.
    hidden: features of the coupling networks; divisible by num_heads.
    num_blocks: blocks per coupling network.
    num_heads: attention heads.
    num_components: K, logistic components per element (32 in the paper's CIFAR model).
    dropout: dropout rate of the coupling networks in training (the dequantizer's
      networks have none).
    dequantization_couplings: couplings of the variational dequantizer's flow.
  """
  num_checkerboard: int = 4
  num_channel: int = 2
  num_checkerboard_squeezed: int = 3
  hidden: int = 32
  num_blocks: int = 2
  num_heads: int = 4
  num_components: int = 8
  dropout: float = 0.0
  dequantization_couplings: int = 4

  def _steps(self, mask: str, count: int) -> list[nn.Module]:
    """count x [actnorm, invertible 1x1 conv, coupling], parities alternating."""
    layers = []
    for i in range(count):
      layers += [ActNorm(), Invertible1x1Conv(),
                 _make_coupling(self, mask, i % 2, self.hidden, self.dropout)]
    return layers

  def make_flow(self) -> nn.Module:
    return Chain([*self._steps('checkerboard', self.num_checkerboard), Squeeze(),
                  *self._steps('channel', self.num_channel),
                  *self._steps('checkerboard', self.num_checkerboard_squeezed), Unsqueeze()])

  def make_dequantizer(self) -> nn.Module:
    if self.dequantization != 'variational':
      return super().make_dequantizer()
    return FlowppDequantizer(self.num_levels, hidden=self.dequantization_hidden,
                             num_couplings=self.dequantization_couplings, dtype=self.dtype,
                             num_blocks=self.num_blocks, num_heads=self.num_heads,
                             num_components=self.num_components)


def build(info: 'DatasetInfo', *, dtype: Any = jnp.float32, num_checkerboard: int = 4,
          num_channel: int = 2, num_checkerboard_squeezed: int = 3, hidden: int = 32,
          num_blocks: int = 2, num_heads: int = 4, num_components: int = 8, dropout: float = 0.0,
          conditional: bool = False,
          dequantization: Literal['uniform', 'variational'] = 'variational',
          dequantization_hidden: int = 32, dequantization_couplings: int = 4,
          alpha: float = 0.05) -> FlowPP:
  """Flow++ for `info`'s discrete images.

  Args:
    info: metadata of a discrete image dataset, examples of shape (H, W, C); H and W even.
    dtype: computation dtype of the coupling networks.
    num_checkerboard: checkerboard couplings at full resolution (>= 0).
    num_channel: channel couplings after the squeeze (>= 0).
    num_checkerboard_squeezed: checkerboard couplings after the channel ones (>= 0).
    hidden: features of the coupling networks, divisible by num_heads.
    num_blocks: conv + attention blocks per coupling network (>= 0; 0 leaves the input and
      output convolutions only).
    num_heads: attention heads (>= 1).
    num_components: logistic mixture components per element (>= 1; 32 in the paper).
    dropout: dropout rate of the coupling networks in training, in [0, 1).
    conditional: class-conditional base density (needs a labelled dataset).
    dequantization: 'variational' (the paper: a flow of the same couplings) or 'uniform'.
    dequantization_hidden: features of the variational dequantizer's networks,
      divisible by num_heads (when variational).
    dequantization_couplings: couplings of the variational dequantizer's flow (>= 1).
    alpha: logit preprocessing margin, in (0, 0.5).
  """
  fields = image_flow_fields(info, 'Flow++', dequantization, dequantization_hidden, alpha)
  require_squeezable(fields['event_shape'], 1, 'dataset')
  counts = {name: require_int(name, value, minimum=0) for name, value in (
      ('num_checkerboard', num_checkerboard), ('num_channel', num_channel),
      ('num_checkerboard_squeezed', num_checkerboard_squeezed))}
  if not sum(counts.values()):
    raise ConfigError('Flow++ needs at least one coupling: --num_checkerboard, --num_channel '
                      'and --num_checkerboard_squeezed are all 0.')
  num_heads = require_int('num_heads', num_heads)
  if fields['dequantization'] == 'variational':
    require_multiple('dequantization_hidden', fields['dequantization_hidden'], num_heads,
                     'num_heads')
  hidden = require_multiple('hidden', hidden, num_heads, 'num_heads')
  return FlowPP(**fields, **counts, num_classes=condition_classes(info, conditional, 'Flow++'),
                dtype=dtype, hidden=hidden,
                num_blocks=require_int('num_blocks', num_blocks, minimum=0), num_heads=num_heads,
                num_components=require_int('num_components', num_components),
                dropout=require_rate('dropout', dropout),
                dequantization_couplings=require_int('dequantization_couplings',
                                                     dequantization_couplings))
