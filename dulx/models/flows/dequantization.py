"""Dequantizers: discrete images x of L levels -> continuous v = (x + u) / L in [0, 1).

A flow has a density, so it models v rather than x; for any q(u | x) on [0, 1)^D,

    log P(x) >= E_{u ~ q(u | x)} [log p(v) - D log L - log q(u | x)]

(Ho et al. 2019, "Flow++", Sec. 3.1, Eq. 11). Both dequantizers here return v and
log q(u | x); the model adds -D log L (`base.discrete_log_prob_offset`).

- `UniformDequantizer`: q = U[0, 1)^D, log q = 0 (Theis et al. 2016; Dinh et al. 2017).
- `VariationalDequantizer`: q(u | x) is a conditional flow, so the bound can tighten:
  eps ~ N(0, I) -> affine couplings conditioned on features of x -> sigmoid -> u.

Both draw their noise from the 'dequantize' rng stream (`self.make_rng('dequantize')`).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dulx.models.flows import base
from dulx.models.flows.layers import Chain, ConvNet, Coupling

__all__ = ['DEQUANTIZATIONS', 'UniformDequantizer', 'VariationalDequantizer', 'make_dequantizer']

DEQUANTIZATIONS = ('uniform', 'variational')


class UniformDequantizer(nn.Module):
  """v = (x + u) / L with u ~ U[0, 1)^D; log q(u | x) = 0.

  Attributes:
    num_levels: L.
  """
  num_levels: int

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x: [B, ...] int levels in [0, L) -> (v [B, ...] float32 in [0, 1), log q [B] = 0)."""
    v = base.dequantize_uniform(self.make_rng('dequantize'), x, self.num_levels)
    return v, jnp.zeros(x.shape[:1], jnp.float32)


class VariationalDequantizer(nn.Module):
  """Variational dequantization (Ho et al. 2019, Sec. 3.1) with a small conditional flow.

    c = features(x / (L - 1) - 1/2)               a conv net, [B, H, W, hidden]
    eps ~ N(0, I);  h = f(eps; c)                 checkerboard couplings (affine here)
    u = sigmoid(h)                                in (0, 1)
    log q(u | x) = log N(eps) - log|det dh/deps| - sum log sigmoid'(h)

  with sigmoid'(h) = sigmoid(h) sigmoid(-h).

  Subclasses may override `make_flow()` to use other couplings (Flow++ uses its
  mixture-logistic attention couplings); each coupling reads c as its context.

  Attributes:
    num_levels: L.
    hidden: features of the context net and of the couplings' networks.
    num_couplings: couplings, alternating checkerboard parity.
    dtype: computation dtype of the networks.
  """
  num_levels: int
  hidden: int = 32
  num_couplings: int = 4
  dtype: Any = jnp.float32

  def setup(self):
    self.context_convs = [nn.Conv(self.hidden, (3, 3), dtype=self.dtype) for _ in range(2)]
    self.flow = self.make_flow()

  def make_flow(self) -> nn.Module:
    """f(eps; c): `num_couplings` affine checkerboard couplings, eps [B, H, W, C] -> h."""
    return Chain([Coupling(ConvNet(self.hidden, dtype=self.dtype), mask='checkerboard',
                           parity=i % 2) for i in range(self.num_couplings)])

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x: [B, H, W, C] int levels in [0, L) -> (v [B, H, W, C] float32 in [0, 1), log q [B])."""
    eps = jax.random.normal(self.make_rng('dequantize'), x.shape, jnp.float32)
    return self.from_noise(x, eps)

  def from_noise(self, x: jax.Array, eps: jax.Array) -> tuple[jax.Array, jax.Array]:
    """v and log q(u | x) for the noise eps [B, H, W, C] ~ N(0, I): the deterministic part."""
    if x.ndim != 4:
      raise ValueError(f'variational dequantization needs images [B, H, W, C], got shape {x.shape}.')
    context = (x.astype(jnp.float32) / (self.num_levels - 1) - 0.5).astype(self.dtype)
    for conv in self.context_convs:
      context = nn.relu(conv(context))
    h, logdet = self.flow.forward(eps, context)
    u = jax.nn.sigmoid(h)
    log_sigmoid_jacobian = jax.nn.log_sigmoid(h) + jax.nn.log_sigmoid(-h)
    log_q = (base.standard_normal_log_prob(eps) - logdet
             - log_sigmoid_jacobian.reshape(x.shape[0], -1).sum(axis=-1))
    # sigmoid(h) rounds to 1.0 for h > 17 in float32, and x + u rounds up to x + 1 for
    # u within an ulp of x + 1 of 1: v must stay below the next level's cell.
    x = x.astype(jnp.float32)
    v = (x + u) / self.num_levels
    return jnp.minimum(v, jnp.nextafter((x + 1) / self.num_levels, jnp.float32(0))), log_q


def make_dequantizer(kind: str, num_levels: int, hidden: int = 32,
                     dtype: Any = jnp.float32) -> nn.Module:
  """The dequantizer named `kind` ('uniform' or 'variational')."""
  if kind == 'uniform':
    return UniformDequantizer(num_levels)
  if kind == 'variational':
    return VariationalDequantizer(num_levels, hidden=hidden, dtype=dtype)
  raise ValueError(f'unknown dequantization {kind!r}; expected one of {DEQUANTIZATIONS}.')
