"""Coupling flows: NICE (Dinh et al. 2015) and RealNVP (Dinh et al. 2017).

NICE ("NICE: Non-linear Independent Components Estimation", Sec. 3 and 5.1): the
image as a vector of D entries, `num_couplings` additive couplings alternating the
odd and even entries (an MLP of each half shifts the other), then a diagonal
scaling exp(s); logistic prior by default, as the paper's MNIST model.

RealNVP ("Density estimation using Real NVP", Sec. 3 and 4.1): affine couplings
with tanh-bounded log-scales in a multi-scale architecture. Each scale but the
last is

    3 checkerboard couplings -> squeeze -> 3 channel couplings -> factor out half

and the last is 4 checkerboard couplings, parities alternating; the factored-out
halves go to the base density, the rest to the next scale. A normalisation layer
(batch norm, as the paper, or act norm) follows every coupling. The couplings'
networks are ResNets (`layers.ConvNet` with residual blocks).
"""

import math
from typing import Any, Literal, TYPE_CHECKING

import flax.linen as nn
import jax.numpy as jnp

from dulx.models import condition_classes, require_choice, require_int, require_positive_sizes
from dulx.models.flows.image_flow import PRIORS, ImageFlow, image_flow_fields, require_squeezable
from dulx.models.flows.layers import ActNorm, BatchNorm, Chain, ConvNet, Coupling, FactorOut
from dulx.models.flows.layers import MLP, Reshape, Scaling, Squeeze, Unsqueeze

if TYPE_CHECKING:
  from dulx.data import DatasetInfo

__all__ = ['BUILDERS', 'NICE', 'NORMS', 'RealNVP', 'build_nice', 'build_realnvp']

NORMS = ('batch', 'act', 'none')


class NICE(ImageFlow):
  """NICE: additive couplings on the flattened image, then a diagonal scaling.

  Attributes (besides ImageFlow's):
    num_couplings: additive coupling layers, alternating odd/even halves.
    hidden_sizes: widths of each coupling's MLP.
  """
  prior: str = 'logistic'
  num_couplings: int = 4
  hidden_sizes: tuple[int, ...] = (1000, 1000, 1000, 1000, 1000)

  def make_flow(self) -> nn.Module:
    flat = (math.prod(self.event_shape),)
    couplings = [Coupling(MLP(self.hidden_sizes, dtype=self.dtype), mask='checkerboard',
                          parity=i % 2, affine=False) for i in range(self.num_couplings)]
    return Chain([Reshape(self.event_shape, flat), *couplings, Scaling(),
                  Reshape(flat, self.event_shape)])


class RealNVP(ImageFlow):
  """RealNVP's multi-scale flow of affine couplings.

  Attributes (besides ImageFlow's):
    num_scales: scales; H and W must be divisible by 2^(num_scales - 1).
    hidden: features of the coupling networks.
    num_blocks: residual blocks per coupling network.
    norm: 'batch', 'act' or 'none', after every coupling.
  """
  num_scales: int = 2
  hidden: int = 64
  num_blocks: int = 2
  norm: str = 'batch'

  def _couplings(self, mask: str, count: int) -> list[nn.Module]:
    layers = []
    for i in range(count):
      layers.append(Coupling(ConvNet(self.hidden, self.num_blocks, dtype=self.dtype),
                             mask=mask, parity=i % 2))
      if self.norm == 'batch':
        layers.append(BatchNorm())
      elif self.norm == 'act':
        layers.append(ActNorm())
    return layers

  def _scale(self, i: int) -> nn.Module:
    if i == self.num_scales - 1:
      return Chain(self._couplings('checkerboard', 4))
    return Chain([*self._couplings('checkerboard', 3), Squeeze(), *self._couplings('channel', 3),
                  FactorOut(self._scale(i + 1)), Unsqueeze()])

  def make_flow(self) -> nn.Module:
    if self.norm not in NORMS:
      raise ValueError(f'unknown norm {self.norm!r}; expected one of {NORMS}.')
    return self._scale(0)


def build_nice(info: 'DatasetInfo', *, dtype: Any = jnp.float32, num_couplings: int = 4,
               hidden_sizes: tuple[int, ...] = (1000, 1000, 1000, 1000, 1000),
               prior: Literal['logistic', 'normal'] = 'logistic',
               dequantization: Literal['uniform', 'variational'] = 'uniform',
               dequantization_hidden: int = 32, alpha: float = 0.05) -> NICE:
  """NICE for `info`'s discrete images.

  Args:
    info: metadata of a discrete image dataset, examples of shape (H, W, C).
    dtype: computation dtype of the coupling networks.
    num_couplings: additive coupling layers (>= 2, so every entry is transformed).
    hidden_sizes: hidden widths of each coupling's MLP.
    prior: base density: 'logistic' (the paper's, for MNIST) or 'normal'.
    dequantization: 'uniform' noise or 'variational' (a learned conditional flow).
    dequantization_hidden: features of the variational dequantizer's networks.
    alpha: logit preprocessing margin, in (0, 0.5).
  """
  return NICE(**image_flow_fields(info, 'NICE', dequantization, dequantization_hidden, alpha),
              dtype=dtype, prior=require_choice('prior', prior, PRIORS),
              num_couplings=require_int('num_couplings', num_couplings, minimum=2),
              hidden_sizes=require_positive_sizes('hidden_sizes', hidden_sizes))


def build_realnvp(info: 'DatasetInfo', *, dtype: Any = jnp.float32, num_scales: int = 2,
                  hidden: int = 64, num_blocks: int = 2,
                  norm: Literal['batch', 'act', 'none'] = 'batch', conditional: bool = False,
                  dequantization: Literal['uniform', 'variational'] = 'uniform',
                  dequantization_hidden: int = 32, alpha: float = 0.05) -> RealNVP:
  """RealNVP for `info`'s discrete images.

  Args:
    info: metadata of a discrete image dataset, examples of shape (H, W, C).
    dtype: computation dtype of the coupling networks.
    num_scales: scales of the multi-scale architecture (>= 1); H and W must be
      divisible by 2^(num_scales - 1).
    hidden: features of the coupling networks.
    num_blocks: residual blocks per coupling network (>= 0).
    norm: normalisation after every coupling: 'batch' (the paper), 'act' or 'none'.
    conditional: class-conditional base density (needs a labelled dataset).
    dequantization: 'uniform' noise or 'variational' (a learned conditional flow).
    dequantization_hidden: features of the variational dequantizer's networks.
    alpha: logit preprocessing margin, in (0, 0.5).
  """
  fields = image_flow_fields(info, 'RealNVP', dequantization, dequantization_hidden, alpha)
  num_scales = require_int('num_scales', num_scales)
  require_squeezable(fields['event_shape'], num_scales - 1, 'num_scales')
  return RealNVP(**fields, num_classes=condition_classes(info, conditional, 'RealNVP'),
                 dtype=dtype, num_scales=num_scales, hidden=require_int('hidden', hidden),
                 num_blocks=require_int('num_blocks', num_blocks, minimum=0),
                 norm=require_choice('norm', norm, NORMS))


BUILDERS = {'nice': build_nice, 'realnvp': build_realnvp}
