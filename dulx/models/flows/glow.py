"""Glow (Kingma & Dhariwal 2018, "Glow: Generative Flow with Invertible 1x1 Convolutions").

One step of flow (Sec. 3, Table 1) is

    actnorm -> invertible 1x1 convolution (LU) -> affine coupling (channel halves)

and the multi-scale architecture (Fig. 2b) repeats, for each of `num_scales` scales,

    squeeze -> K steps of flow -> [learned prior, factor out half]   (all scales but the last)

The K steps of a scale share one compiled body (`layers.Repeat`, an `nn.scan`,
unrolled on a CPU where a rolled loop runs several times slower) and can be
rematerialised to save memory. The factored-out half's learned prior
N(mu(h), exp(s(h))^2), mu and s from a zero-initialised conv of the kept half h,
is the affine coupling z = (x - mu(h)) exp(-s(h)) before a plain factor-out: the
same density, written as a flow.
"""

from typing import Any, Literal, TYPE_CHECKING

import flax.linen as nn
import jax.numpy as jnp

from dulx.models import condition_classes, require_bool, require_int
from dulx.models.flows.image_flow import ImageFlow, image_flow_fields, require_squeezable
from dulx.models.flows.layers import ActNorm, Chain, ConvNet, Coupling, FactorOut, Invertible1x1Conv
from dulx.models.flows.layers import Repeat, Squeeze, Unsqueeze, ZeroConv

if TYPE_CHECKING:
  from dulx.data import DatasetInfo

__all__ = ['Glow', 'GlowStep', 'build']


class GlowStep(nn.Module):
  """One step of flow: actnorm, invertible 1x1 conv, affine coupling (Glow, Table 1).

  Attributes:
    hidden: features of the coupling network (512 in the paper).
    dtype: computation dtype of the coupling network.
  """
  hidden: int
  dtype: Any = jnp.float32

  def setup(self):
    self.norm = ActNorm()
    self.mix = Invertible1x1Conv()
    self.coupling = Coupling(ConvNet(self.hidden, dtype=self.dtype), mask='channel')

  def forward(self, x, context=None, *, train=False):
    logdet = jnp.zeros(x.shape[:1], jnp.float32)
    for layer in (self.norm, self.mix, self.coupling):
      x, ld = layer.forward(x, context, train=train)
      logdet = logdet + ld
    return x, logdet

  def inverse(self, z, context=None, *, train=False):
    logdet = jnp.zeros(z.shape[:1], jnp.float32)
    for layer in (self.coupling, self.mix, self.norm):
      z, ld = layer.inverse(z, context, train=train)
      logdet = logdet + ld
    return z, logdet


class Glow(ImageFlow):
  """Glow's multi-scale flow.

  Attributes (besides ImageFlow's):
    num_scales: L; H and W must be divisible by 2^L.
    steps_per_scale: K, steps of flow per scale.
    hidden: features of the coupling networks.
    learned_prior: factored-out halves get a learned conditional prior (the paper);
      otherwise a standard normal (RealNVP).
    remat: recompute each step's activations in the backward pass (less memory).
    scan_unroll: steps per iteration of a scale's scanned loop; None: all of them on a
      CPU, one elsewhere (`layers.Repeat`).
  """
  num_scales: int = 2
  steps_per_scale: int = 8
  hidden: int = 128
  learned_prior: bool = True
  remat: bool = False
  scan_unroll: int | None = None

  def _scale(self, i: int) -> nn.Module:
    layers = [Squeeze(), Repeat(GlowStep(self.hidden, self.dtype), self.steps_per_scale,
                                remat=self.remat, unroll=self.scan_unroll)]
    if i < self.num_scales - 1:
      if self.learned_prior:  # Parity 1: the kept (second) half conditions the factored one.
        layers.append(Coupling(ZeroConv(self.dtype), mask='channel', parity=1))
      layers.append(FactorOut(self._scale(i + 1)))
    return Chain([*layers, Unsqueeze()])

  def make_flow(self) -> nn.Module:
    return self._scale(0)


def build(info: 'DatasetInfo', *, dtype: Any = jnp.float32, num_scales: int = 2,
          steps_per_scale: int = 8, hidden: int = 128, learned_prior: bool = True,
          remat: bool = False, scan_unroll: int = 0, conditional: bool = False,
          dequantization: Literal['uniform', 'variational'] = 'uniform',
          dequantization_hidden: int = 32, alpha: float = 0.05) -> Glow:
  """Glow for `info`'s discrete images.

  Args:
    info: metadata of a discrete image dataset, examples of shape (H, W, C).
    dtype: computation dtype of the coupling networks.
    num_scales: scales L (>= 1); H and W must be divisible by 2^L.
    steps_per_scale: steps of flow K per scale (>= 1).
    hidden: features of the coupling networks.
    learned_prior: learned conditional prior of each factored-out half (the paper).
    remat: rematerialise each step in the backward pass, trading compute for memory.
    scan_unroll: steps of a scale per iteration of its scanned loop; 0: the backend's
      default (the whole scale unrolled on a CPU, where a rolled loop ran 6-8x slower;
      rolled on an accelerator). The same function and parameters at any value.
    conditional: class-conditional base density (needs a labelled dataset).
    dequantization: 'uniform' noise or 'variational' (a learned conditional flow).
    dequantization_hidden: features of the variational dequantizer's networks.
    alpha: logit preprocessing margin, in (0, 0.5).
  """
  fields = image_flow_fields(info, 'Glow', dequantization, dequantization_hidden, alpha)
  num_scales = require_int('num_scales', num_scales)
  require_squeezable(fields['event_shape'], num_scales, 'num_scales')
  return Glow(**fields, num_classes=condition_classes(info, conditional, 'Glow'), dtype=dtype,
              num_scales=num_scales,
              steps_per_scale=require_int('steps_per_scale', steps_per_scale),
              hidden=require_int('hidden', hidden),
              learned_prior=require_bool('learned_prior', learned_prior),
              remat=require_bool('remat', remat),
              scan_unroll=require_int('scan_unroll', scan_unroll, minimum=0) or None)
