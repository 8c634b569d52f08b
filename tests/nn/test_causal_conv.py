"""CausalConv1D: exact taps per dilation, agreement with lax's convolution, cached steps."""

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from dulx.nn.causal_conv import CausalConv1D, raster_positions, shift_right
from tests import helpers

CASES = [(1, 1), (2, 1), (2, 2), (2, 4), (2, 8), (3, 2), (3, 3)]  # (kernel_size, dilation)


def _conv(kernel_size, dilation, features=3):
  return CausalConv1D(features, kernel_size, dilation)


def _variables(conv, in_features=2, length=12):
  return conv.init(jax.random.PRNGKey(0), jnp.zeros((1, length, in_features)))


@pytest.mark.parametrize('kernel_size,dilation', CASES)
def test_output_sees_exactly_its_taps(kernel_size, dilation):
  length = 20
  conv = _conv(kernel_size, dilation, features=1)
  variables = _variables(conv, in_features=1)
  u = jax.random.normal(jax.random.PRNGKey(1), (2, length))
  fn = lambda u: conv.apply(variables, u[..., None])[..., 0]
  dependency = helpers.dependency_matrix(fn, u)
  lags = np.arange(length)[:, None] - np.arange(length)[None, :]
  expected = (lags >= 0) & (lags % dilation == 0) & (lags <= (kernel_size - 1) * dilation)
  np.testing.assert_array_equal(dependency, expected)
  assert conv.receptive_field == (kernel_size - 1) * dilation + 1


@pytest.mark.parametrize('kernel_size,dilation', CASES)
def test_matches_lax_dilated_convolution(kernel_size, dilation):
  conv = _conv(kernel_size, dilation)
  variables = _variables(conv)
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 12, 2))
  params = variables['params']
  reference = lax.conv_general_dilated(
      x, params['kernel'], window_strides=(1,), padding=[((kernel_size - 1) * dilation, 0)],
      rhs_dilation=(dilation,), dimension_numbers=('NWC', 'WIO', 'NWC')) + params['bias']
  np.testing.assert_allclose(conv.apply(variables, x), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kernel_size,dilation', CASES)
def test_cached_steps_equal_the_whole_sequence(kernel_size, dilation):
  conv = _conv(kernel_size, dilation)
  variables = _variables(conv)
  x = jax.random.normal(jax.random.PRNGKey(3), (2, 12, 2))
  full = conv.apply(variables, x)
  step = jax.jit(lambda v, x_t, t: conv.apply(v, x_t, t, method='decode', mutable=['cache']))
  out, cache = conv.apply(variables, x[:, 0], 0, method='decode', mutable=['cache'])
  outputs = [out]
  for t in range(1, x.shape[1]):
    out, cache = step({**variables, **cache}, x[:, t], t)
    outputs.append(out)
  np.testing.assert_allclose(jnp.stack(outputs, axis=1), full, rtol=1e-5, atol=1e-5)
  size = (kernel_size - 1) * dilation
  if size:  # The queue holds the last (k - 1) d inputs, no more.
    assert cache['cache']['queue'].shape == (2, size, 2)


def test_shift_right_and_positions():
  x = jnp.arange(6.0).reshape(1, 3, 2)
  np.testing.assert_array_equal(shift_right(x)[0], [[0, 0], [0, 1], [2, 3]])
  np.testing.assert_allclose(raster_positions((3,)), [[-1], [0], [1]])
  image = raster_positions((2, 3, 1))
  assert image.shape == (6, 2) and image.dtype == np.float32
  np.testing.assert_allclose(image[4], [1.0, 0.0])  # Row 1 of 2, column 1 of 3.
  rgb = raster_positions((2, 2, 3))
  np.testing.assert_allclose(rgb[:3], [[-1, -1, -1], [-1, -1, 0], [-1, -1, 1]])
  assert raster_positions((1, 1, 1)).shape == (1, 0)
