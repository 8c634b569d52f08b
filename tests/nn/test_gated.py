"""dulx.nn.gated: receptive fields of the two causal convolutions, windows, the gate."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dulx.nn.gated import HorizontalConv, VerticalConv, gate, horizontal_mask


def _random_variables(layer, x, seed=0):
  """The layer's variables with every entry, masked ones included, drawn from N(0, 1)."""
  shapes = jax.eval_shape(layer.init, jax.random.PRNGKey(0), x)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), s.dtype), shapes)


def _dependence(layer, variables, x, h, w):
  """[H, W, in, out] bool: which inputs the output at pixel (h, w) depends on."""
  jacobian = jax.jacrev(lambda x: layer.apply(variables, x)[0, h, w])(x)
  return np.moveaxis(np.asarray(jacobian)[:, 0], 0, -1) != 0


def test_gate_is_tanh_times_sigmoid_of_the_halves():
  a = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 4, 6))
  np.testing.assert_allclose(gate(a), np.tanh(a[..., :3]) / (1 + np.exp(-a[..., 3:])), rtol=1e-6)


@pytest.mark.parametrize('kernel_size', [1, 3, 5])
def test_vertical_conv_sees_its_rows_and_columns(kernel_size):
  x = jax.random.normal(jax.random.PRNGKey(1), (1, 7, 7, 2))
  layers = {impl: VerticalConv(4, kernel_size, impl=impl) for impl in ('xla', 'taps')}
  variables = _random_variables(layers['xla'], x)
  seen = _dependence(layers['taps'], variables, x, 3, 3).any(axis=(2, 3))
  c = kernel_size // 2
  expected = np.zeros((7, 7), bool)
  expected[3 - c:4, 3 - c:4 + c] = True
  np.testing.assert_array_equal(seen, expected)
  full = {impl: layer.apply(variables, x) for impl, layer in layers.items()}
  np.testing.assert_allclose(full['taps'], full['xla'], rtol=1e-5, atol=1e-5)
  # One output row from the k // 2 + 1 padded input rows it reads (cached sampling).
  padded = jnp.pad(x, ((0, 0), (c, 0), (c, c), (0, 0)))
  row = layers['taps'].apply(variables, padded[:, 4:5 + c], method='window')
  np.testing.assert_allclose(row[:, 0], full['xla'][:, 4], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kernel_size,mask_type,data_channels,in_features,features,num_splits', [
    (3, 'A', 1, 1, 4, 2), (5, 'B', 1, 3, 4, 1), (3, 'A', 3, 3, 12, 2), (1, 'B', 3, 6, 12, 2)])
def test_horizontal_conv_sees_the_left_and_masked_self(kernel_size, mask_type, data_channels,
                                                       in_features, features, num_splits):
  x = jax.random.normal(jax.random.PRNGKey(2), (1, 5, 7, in_features))
  layers = {impl: HorizontalConv(features, kernel_size, mask_type, data_channels=data_channels,
                                 num_splits=num_splits, impl=impl) for impl in ('xla', 'taps')}
  variables = _random_variables(layers['xla'], x)
  seen = _dependence(layers['taps'], variables, x, 2, 4)
  c = kernel_size // 2
  expected = np.zeros(seen.shape, bool)
  expected[2, 4 - c:4] = True
  expected[2, 4] = horizontal_mask(kernel_size, in_features, features, mask_type, data_channels,
                                   num_splits)[0, c] > 0
  np.testing.assert_array_equal(seen, expected)
  if num_splits == 2:  # Unit i of the filter and of the gate half see the same inputs.
    np.testing.assert_array_equal(seen[2, 4, :, :features // 2], seen[2, 4, :, features // 2:])
  full = {impl: layer.apply(variables, x) for impl, layer in layers.items()}
  np.testing.assert_allclose(full['taps'], full['xla'], rtol=1e-5, atol=1e-5)
  padded = jnp.pad(x, ((0, 0), (0, 0), (c, 0), (0, 0)))
  pixel = layers['taps'].apply(variables, padded[:, 2:3, 4:5 + c], method='window')
  np.testing.assert_allclose(pixel[:, 0, 0], full['xla'][:, 2, 4], rtol=1e-5, atol=1e-5)


def test_horizontal_mask_groups_and_bad_layers():
  mask = horizontal_mask(3, 3, 6, 'A', data_channels=3, num_splits=2)
  # Output groups of each half: [0, 1, 2]; input R (group 0) feeds G and B only.
  np.testing.assert_array_equal(mask[0, 1], [[0, 1, 1, 0, 1, 1], [0, 0, 1, 0, 0, 1],
                                             [0, 0, 0, 0, 0, 0]])
  assert mask[0, 0].all()
  x = jnp.zeros((1, 2, 2, 1))
  with pytest.raises(ValueError, match='masks every tap'):
    HorizontalConv(4, 1, 'A').init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match='odd'):
    VerticalConv(4, 2).init(jax.random.PRNGKey(0), x)
