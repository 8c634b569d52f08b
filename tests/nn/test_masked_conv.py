"""MaskedConv2D: the PixelCNN mask, channel groups, and agreement of its implementations."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dulx.nn.masked_conv import MaskedConv2D, channel_groups, conv_mask


def _random_variables(layer, x, seed=0):
  """The layer's variables with every entry, masked taps included, drawn from N(0, 1)."""
  shapes = jax.eval_shape(layer.init, jax.random.PRNGKey(0), x)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), s.dtype), shapes)


def _centre_dependence(layer, variables, size, in_features):
  """[size, size, in, out] bool: which inputs the output at the centre pixel depends on."""
  x = jax.random.normal(jax.random.PRNGKey(1), (1, size, size, in_features))
  centre = size // 2
  jacobian = jax.jit(jax.jacrev(lambda x: layer.apply(variables, x)[0, centre, centre]))(x)
  return np.moveaxis(np.asarray(jacobian)[:, 0], 0, -1) != 0


# (kernel size, mask type, data channels, in features, out features).
CASES = [(7, 'A', 1, 1, 8), (3, 'B', 1, 4, 4), (5, 'A', 3, 3, 6), (3, 'B', 3, 6, 9),
         (1, 'B', 3, 6, 6), (1, 'A', 3, 3, 6)]


@pytest.mark.parametrize('kernel_size,mask_type,data_channels,in_features,features', CASES)
def test_impls_agree_on_the_same_parameters(kernel_size, mask_type, data_channels, in_features,
                                            features):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 5, in_features))
  layers = {impl: MaskedConv2D(features, kernel_size, mask_type, data_channels=data_channels,
                               impl=impl) for impl in ('xla', 'taps')}
  trees = {impl: jax.eval_shape(layer.init, jax.random.PRNGKey(0), x)
           for impl, layer in layers.items()}
  assert trees['xla'] == trees['taps']
  variables = _random_variables(layers['xla'], x)

  @jax.jit
  def outputs_and_grads(variables):
    loss = lambda v, layer: jnp.sum(jnp.sin(layer.apply(v, x)))
    return {impl: (layer.apply(variables, x), jax.grad(loss)(variables, layer))
            for impl, layer in layers.items()}

  results = outputs_and_grads(variables)
  chex.assert_shape(results['xla'][0], (2, 6, 5, features))
  np.testing.assert_allclose(results['taps'][0], results['xla'][0], rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(results['taps'][1], results['xla'][1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('kernel_size,mask_type,num_taps', [(7, 'A', 24), (7, 'B', 25),
                                                            (3, 'B', 5), (3, 'A', 4), (1, 'B', 1)])
@pytest.mark.parametrize('impl', ['xla', 'taps'])
def test_receptive_field_is_the_unmasked_taps(kernel_size, mask_type, num_taps, impl):
  mask = conv_mask(kernel_size, 1, 1, mask_type)
  assert mask.sum() == num_taps
  layer = MaskedConv2D(2, kernel_size, mask_type, impl=impl)
  x = jnp.zeros((1, 9, 9, 1))
  dependence = _centre_dependence(layer, _random_variables(layer, x), 9, 1)
  assert dependence.any(axis=-1).sum() == num_taps
  window = dependence.any(axis=(2, 3))[4 - kernel_size // 2:5 + kernel_size // 2,
                                        4 - kernel_size // 2:5 + kernel_size // 2]
  np.testing.assert_array_equal(window, mask[..., 0, 0] > 0)


def test_initial_kernel_is_zero_exactly_on_masked_taps():
  layer = MaskedConv2D(8, 7, 'A')
  kernel = jax.jit(layer.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))['params']['kernel']
  assert np.count_nonzero(kernel) == 24 * 8
  np.testing.assert_array_equal(np.asarray(kernel) != 0, conv_mask(7, 1, 8, 'A') > 0)


def test_channel_groups_are_contiguous():
  np.testing.assert_array_equal(channel_groups(3, 3), [0, 1, 2])
  np.testing.assert_array_equal(channel_groups(6, 3), [0, 0, 1, 1, 2, 2])
  np.testing.assert_array_equal(channel_groups(12, 3), np.repeat([0, 1, 2], 4))
  np.testing.assert_array_equal(channel_groups(5, 1), [0] * 5)


def test_centre_tap_masks_channel_groups():
  upper = np.array([[0, 1, 1], [0, 0, 1], [0, 0, 0]])
  np.testing.assert_array_equal(conv_mask(3, 3, 3, 'A', 3)[1, 1], upper)
  np.testing.assert_array_equal(conv_mask(3, 3, 3, 'B', 3)[1, 1], upper + np.eye(3))
  # Earlier pixels are seen by every group; later ones by none.
  mask = conv_mask(3, 6, 9, 'A', 3)
  assert mask[0].all() and mask[1, 0].all() and not mask[1, 2].any() and not mask[2].any()
  np.testing.assert_array_equal(mask[1, 1], np.kron(upper, np.ones((2, 3))))


@pytest.mark.parametrize('impl', ['xla', 'taps'])
@pytest.mark.parametrize('mask_type', ['A', 'B'])
def test_rgb_outputs_see_only_earlier_groups_at_their_pixel(impl, mask_type):
  layer = MaskedConv2D(9, 3, mask_type, data_channels=3, impl=impl)
  x = jnp.zeros((1, 5, 5, 6))
  dependence = _centre_dependence(layer, _random_variables(layer, x), 5, 6)
  g_in, g_out = channel_groups(6, 3)[:, None], channel_groups(9, 3)[None, :]
  expected = g_in < g_out if mask_type == 'A' else g_in <= g_out
  full = np.zeros((5, 5, 6, 9), bool)
  full[1, 1:4] = True  # The row above, within the 3x3 window.
  full[2, 1] = True  # The pixel to the left.
  full[2, 2] = expected
  np.testing.assert_array_equal(dependence, full)


@pytest.mark.parametrize('impl', ['xla', 'taps'])
def test_bfloat16_compute_float32_params(impl):
  layer = MaskedConv2D(6, 3, 'B', data_channels=3, dtype=jnp.bfloat16, impl=impl)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 3))
  variables = _random_variables(layer, x)  # Shaped by layer.init.
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  reference_layer = layer.clone(dtype=jnp.float32)
  y, reference = jax.jit(lambda v: (layer.apply(v, x), reference_layer.apply(v, x)))(variables)
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y, np.float32), reference, rtol=0.05, atol=0.05)


def test_auto_picks_a_concrete_impl():
  layer = MaskedConv2D(2, 3, 'B')
  expected = 'taps' if jax.default_backend() == 'cpu' else 'xla'
  assert layer.resolved_impl() == expected
  assert MaskedConv2D(2, 3, 'B', impl='xla').resolved_impl() == 'xla'


@pytest.mark.parametrize('fields,in_features,match', [
    (dict(features=4, kernel_size=4, mask_type='B'), 4, 'odd'),
    (dict(features=4, kernel_size=3, mask_type='C'), 4, 'mask_type'),
    (dict(features=4, kernel_size=3, mask_type='B', impl='cudnn'), 4, 'impl'),
    (dict(features=2, kernel_size=3, mask_type='B', data_channels=3), 3, 'channel groups'),
    (dict(features=4, kernel_size=1, mask_type='A'), 4, 'every tap'),
])
def test_refuses_impossible_layers(fields, in_features, match):
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(MaskedConv2D(**fields).init, jax.random.PRNGKey(0),
                   jnp.zeros((1, 3, 3, in_features)))
