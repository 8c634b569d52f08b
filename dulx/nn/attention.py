"""Causal multi-head self-attention over a sequence, with a KV-cache decode step.

Scaled dot-product attention (Vaswani et al. 2017, "Attention Is All You Need",
Sec. 3.2) restricted so that position i reads only positions j <= i ('inclusive',
the decoder of a transformer whose input at i is the token before i) or j < i
('strict', PixelSNAIL's attention, whose keys include the raw pixel at j):

    q_i = W_q x_i,  k_j = W_k c_j,  v_j = W_v c_j          per head, D features each
    a_ij = softmax_j(q_i . k_j / sqrt(D) over allowed j)    in float32
    out_i = W_o concat_heads(sum_j a_ij v_j)

where c is the key/value input (x itself unless a separate `context` is given; it
must be per position too, so position j's key and value depend on c_j only). Under
the strict mask position 0 has no allowed key; its attention output is zero.

Both paths run `jax.nn.dot_product_attention` (logits and softmax in float32
whatever the compute dtype) where the value heads are as wide as the key heads, and
the same maths as two einsums otherwise (PixelSNAIL's small keys, wide values).

With `remat`, the backward pass recomputes the attention weights from q, k and v
instead of keeping them (`jax.checkpoint` of the attention core): the gradient then
keeps O(B T H D) numbers per layer rather than the O(B H T^2) weights (at 28x28
pixels and a batch of 128, 315 MB per head and layer in float32), for one more
forward of the core. How much device memory that saves is up to XLA's scheduler,
which may run the recomputations early: XLA's CPU backend does, and assigns the
same temporary memory either way; `benchmarks/train_throughput.py` reports it
(`temp_mb`) for the remat configs on each device.

`decode` is the same layer one position at a time (the KV cache of autoregressive
transformers): keys and values live in the 'cache' collection as [B, T, H, D] arrays;
step t writes the newest position that t reads (t itself, or t - 1 when strict: a
strict key may depend on data drawn only at step t) and attends to positions <= t
(< t when strict), computing what the full pass computes at t.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ['CausalSelfAttention', 'attend', 'causal_mask']


def causal_mask(length: int, strict: bool) -> np.ndarray:
  """[T, T] bool: entry [i, j] is True iff query i may attend to key j (j < i or j <= i)."""
  i, j = np.arange(length)[:, None], np.arange(length)[None, :]
  return j < i if strict else j <= i


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
  """softmax(q k^T / sqrt(D), masked) v per head, the softmax in float32.

  Args:
    q: [B, T, H, D] queries.
    k: [B, S, H, D] keys.
    v: [B, S, H, D_v] values.
    mask: bool, broadcastable to [B, H, T, S]: True where query t may read key s.
      A row without any True attends uniformly to every key (callers zero it).

  Returns:
    [B, T, H, D_v] in v's dtype.
  """
  if q.shape[-1] == v.shape[-1]:
    return jax.nn.dot_product_attention(q, k, v, mask=mask)
  logits = jnp.einsum('bthd,bshd->bhts', q, k, preferred_element_type=jnp.float32)
  logits = jnp.where(mask, logits / np.sqrt(q.shape[-1]), jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum('bhts,bshd->bthd', probs, v)


class CausalSelfAttention(nn.Module):
  """Causal multi-head attention over positions: [B, T, E] -> [B, T, out_features].

  Parameters are float32: 'query', 'key', 'value' kernels [E_in, H, D] and biases
  [H, D], 'out' kernel [H, D_v, out] and bias [out]. Computation runs in `dtype`
  with float32 softmax.

  Attributes:
    num_heads: H.
    qk_features: total query/key features over all heads (H * D); default: the
      query input's features.
    v_features: total value features over all heads; default: qk_features.
    out_features: output features; default: the query input's features.
    strict: attend to j < i instead of j <= i.
    dtype: computation dtype.
    remat: recompute the attention weights in the backward pass instead of keeping
      them (the same values and gradients; less memory, more compute).
  """
  num_heads: int
  qk_features: int | None = None
  v_features: int | None = None
  out_features: int | None = None
  strict: bool = False
  dtype: Any = jnp.float32
  remat: bool = False

  def _project(self, x: jax.Array, context: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(q [B, T, H, D], k [B, T, H, D], v [B, T, H, D_v]) in `dtype`."""
    qk_features = self.qk_features or x.shape[-1]
    v_features = self.v_features or qk_features
    for name, features in (('qk_features', qk_features), ('v_features', v_features)):
      if features % self.num_heads:
        raise ValueError(f'{name}={features} is not divisible by num_heads={self.num_heads}.')

    def dense(name, inputs, features):
      return nn.DenseGeneral((self.num_heads, features // self.num_heads), dtype=self.dtype,
                             name=name)(inputs)

    return (dense('query', x, qk_features), dense('key', context, qk_features),
            dense('value', context, v_features))

  def _output(self, heads: jax.Array, features: int) -> jax.Array:
    """[B, T, H, D_v] -> [B, T, out_features]: the output projection W_o."""
    return nn.DenseGeneral(self.out_features or features, axis=(-2, -1), dtype=self.dtype,
                           name='out')(heads)

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
    """All positions at once.

    Args:
      x: [B, T, E] queries' input.
      context: [B, T, E_c] keys' and values' input; default x.

    Returns:
      [B, T, out_features] in `dtype`; row i depends on x_i and on context_j for
      allowed j only.
    """
    context = x if context is None else context
    q, k, v = self._project(x, context)
    length = x.shape[1]

    def core(q, k, v):  # [B, T, H, D_v]: a pure function of q, k, v (remat recomputes it).
      heads = attend(q, k, v, jnp.asarray(causal_mask(length, self.strict))[None, None])
      if self.strict:
        # Row 0 has no allowed key: the softmax of an all-masked row is uniform over
        # every position, so zero it (exactly, gradient included).
        heads = jnp.where((jnp.arange(length) > 0)[None, :, None, None], heads, 0)
      return heads

    heads = (jax.checkpoint(core) if self.remat else core)(q, k, v)
    return self._output(heads, x.shape[-1])

  @nn.compact
  def decode(self, x: jax.Array, t: jax.Array, length: int,
             context: jax.Array | None = None) -> jax.Array:
    """Position t alone, keys and values of earlier positions from the cache.

    The cache variables 'cached_key' [B, length, H, D] and 'cached_value'
    [B, length, H, D_v] are created (zeros) on the first call; apply with
    mutable=['cache'], positions in order t = 0, 1, ... (repeating a step is harmless:
    it rewrites the same entry).

    Args:
      x: [B, 1, E] queries' input at position t.
      t: int32 scalar position in [0, length).
      length: T, the sequence length (static; sizes the cache).
      context: [B, 1, E_c] keys' and values' input at position t, or when strict at
        position t - 1 (ignored at t = 0); default x (not strict).

    Returns:
      [B, 1, out_features] in `dtype`: row t of the full pass.
    """
    if context is None:
      if self.strict:
        raise ValueError('a strict decode step needs the context of the previous position.')
      context = x
    q, k, v = self._project(x, context)

    def cache(name, a):
      return self.variable('cache', name, jnp.zeros, (a.shape[0], length, *a.shape[2:]), a.dtype)

    cached_k, cached_v = cache('cached_key', k), cache('cached_value', v)
    # At t = 0 a strict step writes slot 0 too; no step reads it before t = 1 rewrites it.
    newest = jnp.maximum(t - 1, 0) if self.strict else t
    cached_k.value = jax.lax.dynamic_update_slice_in_dim(cached_k.value, k, newest, axis=1)
    cached_v.value = jax.lax.dynamic_update_slice_in_dim(cached_v.value, v, newest, axis=1)
    positions = jnp.arange(length)
    allowed = positions < t if self.strict else positions <= t
    heads = attend(q, cached_k.value, cached_v.value, allowed[None, None, None, :])
    if self.strict:
      heads = jnp.where(t > 0, heads, 0)
    return self._output(heads, x.shape[-1])
