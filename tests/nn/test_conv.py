"""same_conv / Conv: XLA's 'SAME' convolution, its gradients and second derivatives."""

import chex
import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from dulx.nn.conv import Conv, same_conv


def _reference(x, kernel):
  return lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _inputs(kernel_shape, size=(6, 5)):
  x = jax.random.normal(jax.random.PRNGKey(0), (3, *size, kernel_shape[2]))
  kernel = jax.random.normal(jax.random.PRNGKey(1), kernel_shape)
  return x, kernel


# [h, w, C, O]: square, rectangular, 1x1, and a kernel as large as the image.
KERNELS = [(3, 3, 2, 4), (3, 5, 3, 2), (1, 1, 4, 3), (5, 3, 1, 1), (7, 5, 2, 3)]


@pytest.mark.parametrize('kernel_shape', KERNELS)
@pytest.mark.parametrize('jit', [False, True])
def test_value_and_gradients_match_xla(kernel_shape, jit):
  x, kernel = _inputs(kernel_shape)
  g = jax.random.normal(jax.random.PRNGKey(2), (*x.shape[:3], kernel_shape[3]))
  wrap = jax.jit if jit else (lambda f: f)

  def results(conv):
    out, pullback = jax.vjp(conv, x, kernel)
    return out, pullback(g)

  ours, xla = wrap(lambda: results(same_conv))(), wrap(lambda: results(_reference))()
  chex.assert_shape(ours[0], g.shape)
  chex.assert_trees_all_close(ours, xla, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kernel_shape', KERNELS[:3])
def test_second_derivatives_match_xla(kernel_shape):
  """The gradient of a term built from an input-gradient (as FFJORD's trace term is)."""
  x, kernel = _inputs(kernel_shape)
  probe = jnp.sign(jax.random.normal(jax.random.PRNGKey(3), (*x.shape[:3], kernel_shape[3])))

  def trace_term(conv, x, kernel):
    _, pullback = jax.vjp(lambda v: jnp.tanh(conv(v, kernel)), x)
    return jnp.sum(jnp.sin(pullback(probe)[0]) * x)

  ours = jax.jit(jax.grad(lambda x, k: trace_term(same_conv, x, k), (0, 1)))(x, kernel)
  xla = jax.jit(jax.grad(lambda x, k: trace_term(_reference, x, k), (0, 1)))(x, kernel)
  chex.assert_trees_all_close(ours, xla, rtol=1e-4, atol=1e-4)


def test_gradients_inside_a_differentiated_loop_match_xla():
  x, kernel = _inputs((3, 3, 2, 2))

  def loss(conv, kernel):
    h = lax.fori_loop(0, 4, lambda i, h: h + 0.1 * jnp.tanh(conv(h, kernel)), x)
    return jnp.sum(h**2)

  ours = jax.jit(jax.grad(lambda k: loss(same_conv, k)))(kernel)
  xla = jax.jit(jax.grad(lambda k: loss(_reference, k)))(kernel)
  np.testing.assert_allclose(ours, xla, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('kernel_size', [(3, 3), (1, 5)])
def test_conv_module_is_nn_conv_with_the_same_parameters(kernel_size):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 4, 3))
  ours, flax_conv = Conv(6, kernel_size), nn.Conv(6, kernel_size, padding='SAME')
  variables = ours.init(jax.random.PRNGKey(1), x)
  reference = flax_conv.init(jax.random.PRNGKey(1), x)
  chex.assert_trees_all_equal(variables, reference)  # Names, shapes, initial values.
  variables = jax.tree.map(lambda v: v + 0.5, variables)  # A nonzero bias too.
  np.testing.assert_allclose(ours.apply(variables, x), flax_conv.apply(variables, x),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('x_shape,kernel_shape', [((2, 5, 5, 3), (2, 2, 3, 4)),
                                                  ((2, 5, 5, 3), (3, 3, 2, 4)),
                                                  ((5, 5, 3), (3, 3, 3, 4))])
def test_bad_shapes_raise(x_shape, kernel_shape):
  with pytest.raises(ValueError, match='same_conv needs'):
    same_conv(jnp.zeros(x_shape), jnp.zeros(kernel_shape))


def test_forward_mode_raises():
  """Reverse mode only (the module docstring says why); jacrev is the way to a Jacobian."""
  x, kernel = _inputs((3, 3, 2, 2))
  with pytest.raises(TypeError, match='forward-mode'):
    jax.jacfwd(same_conv)(x, kernel)
  np.testing.assert_allclose(jax.jacrev(same_conv)(x, kernel), jax.jacrev(_reference)(x, kernel),
                             rtol=1e-5, atol=1e-5)
