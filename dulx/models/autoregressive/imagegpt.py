"""ImageGPT (Chen et al. 2020, "Generative Pretraining from Pixels"): a decoder-only
transformer over the sub-pixels of an image in raster order.

The D = H * W * C sub-pixels (channels in order within a pixel) are a sequence of
tokens, their levels. Position t reads the token before it, so its output predicts
x_t from x_<t (Sec. 2.1, the autoregressive objective):

    h_0 = start + P_0,   h_t = E[x_{t-1}] + P_t   (t >= 1)     learned E [L, E], P [D, E]
    (+ a learned class embedding on every position when class-conditional)
    repeat num_layers times (pre-LN, GPT-2):
      h = h + Dropout(Attn(LN(h)))         causal: position t attends to positions <= t
      h = h + Dropout(MLP(LN(h)))          Dense(4E) -> GELU -> Dense(E)
    logits_t = Dense(LN(h_t))              -> L levels (categorical) or 1 (Bernoulli)

The paper's colour palette is a quantisation of the data; dulx's harness quantises
with `--quantize=K` (K levels per sub-pixel), and this model takes the levels it is
given as its vocabulary.

`network(u)` takes float levels and embeds them by linear interpolation between the
rows of E, E(u) = sum_l max(0, 1 - |u - l|) E[l], which is the lookup E[x] at integer
levels and is differentiable in u, so causality can be checked by the Jacobian.

`decode(x, t)` is one position through the same layers with each attention's keys
and values of earlier positions in the 'cache' collection (the KV cache), so the
cached sampler draws the same samples as the naive one in O(D) work per step
instead of O(D^2).
"""

from collections.abc import Callable
import math
from typing import Any, Literal, TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from dulx.models import check_event_shape, condition_classes, require_int, require_levels
from dulx.models import require_bool, require_multiple, require_rate, resolve_likelihood
from dulx.models.autoregressive.base import RasterLogitsModel
from dulx.nn.attention import CausalSelfAttention

if TYPE_CHECKING:
  from dulx.data import DatasetInfo

__all__ = ['ImageGPT', 'TransformerBlock', 'build']

_EMBEDDING_INIT = nn.initializers.normal(0.02)  # GPT-2's initialisation of embeddings.


class TransformerBlock(nn.Module):
  """A pre-LN transformer decoder block (GPT-2): [B, T, E] -> [B, T, E].

  Attributes:
    num_heads: attention heads (divides E).
    mlp_ratio: the MLP's hidden width in multiples of E.
    dropout_rate: dropout on each residual branch's output when training.
    dtype: computation dtype (parameters float32).
    remat_attention: recompute the attention weights in the backward pass.
  """
  num_heads: int
  mlp_ratio: int = 4
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  remat_attention: bool = False

  def _residuals(self, h: jax.Array, attend: Callable[[jax.Array], jax.Array],
                 train: bool) -> jax.Array:
    """h + Attn(LN(h)), then + MLP(LN(h)); `attend` is the full or the cached attention."""
    def dropout(z):
      return nn.Dropout(self.dropout_rate)(z, deterministic=not train)

    h = h + dropout(attend(nn.LayerNorm(dtype=self.dtype, name='attention_norm')(h)))
    z = nn.LayerNorm(dtype=self.dtype, name='mlp_norm')(h)
    z = nn.gelu(nn.Dense(self.mlp_ratio * h.shape[-1], dtype=self.dtype, name='mlp_hidden')(z))
    return h + dropout(nn.Dense(h.shape[-1], dtype=self.dtype, name='mlp_out')(z))

  @nn.compact
  def __call__(self, h: jax.Array, *, train: bool = False) -> jax.Array:
    """Every position: h [B, T, E] -> [B, T, E]; row t depends on rows <= t."""
    attention = CausalSelfAttention(self.num_heads, dtype=self.dtype, remat=self.remat_attention,
                                    name='attention')
    return self._residuals(h, attention, train)

  @nn.compact
  def decode(self, h: jax.Array, t: jax.Array, length: int) -> jax.Array:
    """Position t: h [B, 1, E] -> [B, 1, E], earlier positions from the KV cache."""
    attention = CausalSelfAttention(self.num_heads, dtype=self.dtype, name='attention')
    return self._residuals(h, lambda z: attention.decode(z, t, length), train=False)


class ImageGPT(RasterLogitsModel):
  """A decoder-only transformer over the sub-pixels of discrete images (module docstring).

  Attributes:
    event_shape: shape of one example, e.g. (H, W, C); the sequence is its D
      entries in C (raster-then-channel) order.
    num_levels: L, levels per sub-pixel (the vocabulary).
    num_classes: number of classes when class-conditional, else None.
    dtype: computation dtype (parameters, logits and softmax stay float32).
    num_layers: transformer blocks.
    embed_dim: E, the width of the residual stream.
    num_heads: attention heads (divides E).
    mlp_ratio: the MLP's hidden width in multiples of E.
    dropout_rate: dropout on the embeddings and each residual branch when training.
    likelihood: 'bernoulli' (one logit per sub-pixel, L == 2) or 'categorical'.
    remat_attention: recompute each block's attention weights in the backward pass
      instead of keeping them (the same values and gradients; see `build`).
  """
  event_shape: tuple[int, ...]
  num_levels: int
  num_classes: int | None = None
  dtype: Any = jnp.float32
  num_layers: int = 4
  embed_dim: int = 64
  num_heads: int = 4
  mlp_ratio: int = 4
  dropout_rate: float = 0.0
  likelihood: str = 'categorical'
  remat_attention: bool = False

  def setup(self):
    num_dims = math.prod(self.event_shape)
    self.token_embedding = self.param('token_embedding', _EMBEDDING_INIT,
                                      (self.num_levels, self.embed_dim))
    self.start = self.param('start', _EMBEDDING_INIT, (self.embed_dim,))
    self.position_embedding = self.param('position_embedding', _EMBEDDING_INIT,
                                         (num_dims, self.embed_dim))
    if self.num_classes is not None:
      self.class_embedding = nn.Embed(self.num_classes, self.embed_dim,
                                      embedding_init=_EMBEDDING_INIT)
    self.embedding_dropout = nn.Dropout(self.dropout_rate)
    self.blocks = [TransformerBlock(self.num_heads, self.mlp_ratio, self.dropout_rate, self.dtype,
                                    self.remat_attention)
                   for _ in range(self.num_layers)]
    self.final_norm = nn.LayerNorm(dtype=self.dtype)
    self.head = nn.Dense(1 if self.likelihood == 'bernoulli' else self.num_levels,
                         dtype=self.dtype)

  def _embed(self, u: jax.Array) -> jax.Array:
    """u: [B, N] float levels -> [B, N, E]: the rows of E interpolated linearly at u."""
    weights = nn.relu(1.0 - jnp.abs(u[..., None] - jnp.arange(self.num_levels, dtype=u.dtype)))
    return jnp.dot(weights.astype(self.dtype), self.token_embedding.astype(self.dtype))

  def _inputs(self, tokens: jax.Array, y: jax.Array | None) -> jax.Array:
    """Adds the class embedding of y (when class-conditional) to [B, T, E] inputs."""
    if self.num_classes is None:
      return tokens
    if y is None:
      raise ValueError('this ImageGPT is class-conditional: pass labels y [B].')
    return tokens + self.class_embedding(y)[:, None].astype(self.dtype)

  def _logits(self, h: jax.Array) -> jax.Array:
    """[B, T, E] -> float32 [B, T] (Bernoulli) or [B, T, L] (categorical)."""
    logits = self.head(self.final_norm(h)).astype(jnp.float32)
    return logits[..., 0] if self.likelihood == 'bernoulli' else logits

  def network(self, u: jax.Array, y: jax.Array | None = None, *,
              train: bool = False) -> jax.Array:
    """The transformer on real-valued inputs (differentiable in u).

    Args:
      u: [B, *event_shape] float levels in [0, L - 1] (integers give the model's
        own inputs; see the module docstring for fractional ones).
      y: [B] int labels in [0, num_classes) when class-conditional; ignored otherwise.
      train: apply dropout (draws the 'dropout' rng).

    Returns:
      float32 logits [B, *event_shape] (Bernoulli) or [B, *event_shape, L]
      (categorical); the logits of dim t depend only on u at dims < t.
    """
    check_event_shape(u, self.event_shape)
    if self.likelihood == 'bernoulli' and self.num_levels != 2:
      raise ValueError(f'a Bernoulli ImageGPT needs num_levels == 2, got {self.num_levels}.')
    batch = u.shape[0]
    tokens = self._embed(u.reshape(batch, -1)[:, :-1])  # Shifted right by one position.
    start = jnp.broadcast_to(self.start.astype(self.dtype), (batch, 1, self.embed_dim))
    h = jnp.concatenate([start, tokens], axis=1) + self.position_embedding.astype(self.dtype)
    h = self.embedding_dropout(self._inputs(h, y), deterministic=not train)
    for block in self.blocks:
      h = block(h, train=train)
    logits = self._logits(h)
    return logits.reshape(batch, *self.event_shape, *logits.shape[2:])

  def __call__(self, x: jax.Array, y: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """Teacher-forced logits of every sub-pixel.

    Args:
      x: [B, *event_shape] int levels in [0, num_levels).
      y: [B] int labels when class-conditional; ignored otherwise.
      train: apply dropout (draws the 'dropout' rng).

    Returns:
      float32 logits [B, *event_shape] (Bernoulli) or [B, *event_shape, L].
    """
    return self.network(x.astype(jnp.float32), y, train=train)

  def decode(self, x: jax.Array, t: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """The logits of dim t from x's dims < t, through the KV cache (the sampling contract).

    Apply with mutable=['cache'] for t = 0, 1, ..., D - 1 in order; the call at
    t = 0 creates the cache.

    Args:
      x: [B, *event_shape] int levels; only dim t - 1 is read (the earlier ones are
        in the cache).
      t: int32 scalar step in [0, D).
      y: [B] int labels when class-conditional.

    Returns:
      float32 [B, 1] (Bernoulli) or [B, 1, L] logits of dim t, as `network` gives them.
    """
    num_dims = math.prod(self.event_shape)
    flat = x.reshape(x.shape[0], num_dims).astype(jnp.float32)
    previous = self._embed(jax.lax.dynamic_slice_in_dim(flat, jnp.maximum(t - 1, 0), 1, axis=1))
    h = jnp.where(t == 0, self.start.astype(self.dtype), previous)
    h = h + jax.lax.dynamic_slice_in_dim(self.position_embedding, t, 1).astype(self.dtype)
    h = self._inputs(h, y)
    for block in self.blocks:
      h = block.decode(h, t, num_dims)
    return self._logits(h)


def build(info: 'DatasetInfo', *, dtype: Any = jnp.float32, num_layers: int = 4,
          embed_dim: int = 64, num_heads: int = 4, mlp_ratio: int = 4, dropout: float = 0.0,
          conditional: bool = False,
          likelihood: Literal['auto', 'bernoulli', 'categorical'] = 'auto',
          remat_attention: bool = False) -> ImageGPT:
  """ImageGPT for `info`'s discrete data (images, or any fixed shape).

  Args:
    info: metadata of a discrete dataset; the sequence is its examples' entries in
      raster-then-channel order.
    dtype: computation dtype.
    num_layers: transformer blocks (>= 1).
    embed_dim: width of the residual stream (a multiple of num_heads).
    num_heads: attention heads (>= 1).
    mlp_ratio: MLP hidden width in multiples of embed_dim (>= 1).
    dropout: dropout rate in [0, 1) on the embeddings and residual branches.
    conditional: condition on the class label (needs a labelled dataset).
    likelihood: 'auto' (Bernoulli for 2 levels, else categorical), 'bernoulli'
      (needs 2 levels) or 'categorical'.
    remat_attention: recompute each block's attention weights in the backward pass
      instead of keeping them: the gradient keeps O(B T E) numbers per block instead
      of O(B H T^2) (T = D, the sequence length), for one more forward of the
      attention (what that saves in device memory is up to XLA's scheduler: nothing
      on a CPU).
  """
  num_levels = require_levels(info, 'ImageGPT')
  num_heads = require_int('num_heads', num_heads)
  embed_dim = require_multiple('embed_dim', embed_dim, num_heads, 'num_heads')
  return ImageGPT(
      event_shape=tuple(info.shape), num_levels=num_levels,
      num_classes=condition_classes(info, conditional, 'ImageGPT'), dtype=dtype,
      num_layers=require_int('num_layers', num_layers), embed_dim=embed_dim,
      num_heads=num_heads, mlp_ratio=require_int('mlp_ratio', mlp_ratio),
      dropout_rate=require_rate('dropout', dropout),
      likelihood=resolve_likelihood(likelihood, num_levels),
      remat_attention=require_bool('remat_attention', remat_attention))
