"""CausalSelfAttention: causality by Jacobian, decode step by step equals the full pass, remat."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dulx.nn.attention import CausalSelfAttention, causal_mask
from tests import helpers

LENGTH, FEATURES = 7, 8


def _layer(strict, **fields):
  return CausalSelfAttention(num_heads=2, qk_features=8, v_features=6, out_features=5,
                             strict=strict, **fields)


def _inputs(seed=0, batch=3):
  x = jax.random.normal(jax.random.PRNGKey(seed), (batch, LENGTH, FEATURES))
  context = jax.random.normal(jax.random.PRNGKey(seed + 1), (batch, LENGTH, 3))
  return x, context


def test_causal_mask():
  np.testing.assert_array_equal(causal_mask(3, strict=False), np.tril(np.ones((3, 3), bool)))
  np.testing.assert_array_equal(causal_mask(3, strict=True), np.tril(np.ones((3, 3), bool), -1))


@pytest.mark.parametrize('strict', [False, True])
def test_each_position_reads_only_allowed_positions(strict):
  layer = _layer(strict)
  x, context = _inputs()
  variables = layer.init(jax.random.PRNGKey(0), x, context)
  f = lambda x, c: layer.apply(variables, x[None], c[None])[0]
  jac_x, jac_c = jax.jit(jax.vmap(jax.jacrev(f, argnums=(0, 1))))(x, context)
  # [B, T_out, out, T_in, in] -> [T_out, T_in]: does output row i depend on input row j?
  dep_x = np.abs(np.asarray(jac_x)).sum(axis=(0, 2, 4)) > 0
  dep_c = np.abs(np.asarray(jac_c)).sum(axis=(0, 2, 4)) > 0
  allowed = causal_mask(LENGTH, strict)
  # Keys and values read the context at allowed positions only, and all of them.
  np.testing.assert_array_equal(dep_c, allowed)
  # The query at i reads x_i only, and has an effect only where there are two keys
  # or more to weigh (i >= 1 inclusive, i >= 2 strict).
  expected_x = np.eye(LENGTH, dtype=bool) & (np.arange(LENGTH) >= 1 + strict)
  np.testing.assert_array_equal(dep_x, expected_x)
  if strict:
    np.testing.assert_array_equal(layer.apply(variables, x, context)[:, 0], 0.0)


@pytest.mark.parametrize('strict', [False, True])
def test_decode_step_by_step_equals_the_full_pass(strict):
  layer = _layer(strict)
  x, context = _inputs(seed=2)
  variables = layer.init(jax.random.PRNGKey(0), x, context)
  full = layer.apply(variables, x, context)

  @jax.jit
  def decode_all(variables, x, context):
    _, cache = layer.apply(variables, x[:, :1], 0, LENGTH, context[:, :1], method='decode',
                           mutable=['cache'])
    def step(cache, t):
      row = lambda a, i: jax.lax.dynamic_slice_in_dim(a, i, 1, axis=1)
      # A strict step gets the context of the previous position (its newest key).
      newest = jnp.maximum(t - 1, 0) if strict else t
      out, cache = layer.apply({**variables, **cache}, row(x, t), t, LENGTH,
                               row(context, newest), method='decode', mutable=['cache'])
      return cache, out[:, 0]
    # Restart from the t = 0 cache: its zeros are overwritten step by step.
    _, rows = jax.lax.scan(step, cache, jnp.arange(LENGTH))
    return jnp.moveaxis(rows, 0, 1), cache

  decoded, cache = decode_all(variables, x, context)
  chex.assert_shape(cache['cache']['cached_key'], (3, LENGTH, 2, 4))
  chex.assert_shape(cache['cache']['cached_value'], (3, LENGTH, 2, 3))
  np.testing.assert_allclose(decoded, full, atol=1e-5, rtol=0)


def test_self_attention_default_sizes_and_bfloat16():
  layer = CausalSelfAttention(num_heads=2, dtype=jnp.bfloat16)
  x, _ = _inputs()
  variables = layer.init(jax.random.PRNGKey(0), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  out = layer.apply(variables, x)
  chex.assert_shape(out, x.shape)
  assert out.dtype == jnp.bfloat16
  reference = layer.clone(dtype=jnp.float32).apply(variables, x)
  np.testing.assert_allclose(np.asarray(out, np.float32), reference, atol=0.05, rtol=0.05)
  with pytest.raises(ValueError, match='divisible'):
    CausalSelfAttention(num_heads=3).init(jax.random.PRNGKey(0), x)


@pytest.mark.parametrize('strict', [False, True])
def test_remat_gives_the_same_values_and_gradients_and_keeps_no_weights(strict):
  x, context = _inputs(seed=4)
  plain, remat = _layer(strict), _layer(strict, remat=True)
  variables = plain.init(jax.random.PRNGKey(0), x, context)
  chex.assert_trees_all_equal_structs(variables, remat.init(jax.random.PRNGKey(0), x, context))
  targets = jax.random.normal(jax.random.PRNGKey(5), (3, LENGTH, 5))
  loss = lambda layer: jax.jit(jax.value_and_grad(
      lambda v, x, c: jnp.sum(targets * layer.apply(v, x, c)), argnums=(0, 1, 2)))
  (value, grads), (remat_value, remat_grads) = (loss(plain)(variables, x, context),
                                                loss(remat)(variables, x, context))
  np.testing.assert_allclose(remat_value, value, rtol=1e-6)
  chex.assert_trees_all_close(remat_grads, grads, rtol=1e-5, atol=1e-6)
  # What the backward pass keeps: the [B, H, T, T] weights without remat, only q, k,
  # v (and the [T, T] mask constant) with it.
  for layer, kept in ((plain, True), (remat, False)):
    loss = lambda v, x, c: layer.apply(v, x, c).sum()
    assert helpers.keeps_attention_weights(loss, variables, x, context, length=LENGTH) == kept
