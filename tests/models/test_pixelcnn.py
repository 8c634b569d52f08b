"""PixelCNN: causality by Jacobian, normalisation, implementations, learning, builder errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dulx.errors import ConfigError
from dulx.models import build_model
from dulx.models.autoregressive.pixelcnn import PixelCNN
from tests import helpers

# 6 features per channel group for RGB: with fewer, every unit of a group can be a
# dead ReLU at all test inputs, which hides a dependence the causality test expects.
TINY = dict(num_residual_blocks=1, stack_channels=18, residual_channels=18, head_channels=18,
            first_kernel_size=3)


def _model(event_shape, num_levels, **fields):
  likelihood = 'bernoulli' if num_levels == 2 else 'categorical'
  return PixelCNN(event_shape=event_shape, num_levels=num_levels,
                  **{**TINY, 'likelihood': likelihood, **fields})


@pytest.mark.parametrize('impl', ['xla', 'taps'])
@pytest.mark.parametrize('event_shape,num_levels,num_classes', [
    ((5, 5, 1), 2, None), ((4, 4, 3), 4, None), ((4, 4, 3), 2, 3)])
def test_each_output_sees_only_earlier_inputs(impl, event_shape, num_levels, num_classes):
  model = _model(event_shape, num_levels, num_classes=num_classes, conv_impl=impl)
  # Every parameter random, masked taps and class biases included: the masks, not
  # zeros in the weights, must keep the network causal.
  variables = helpers.random_variables(model, scale=0.5)
  u = jax.random.uniform(jax.random.PRNGKey(1), (16, *event_shape))
  y = None if num_classes is None else jnp.array([2])
  network = lambda u: model.apply(variables, u, y, method='network')
  dependency = helpers.dependency_matrix(network, u)
  ordering = model.ordering()
  np.testing.assert_array_equal(ordering, np.arange(np.prod(event_shape)))
  helpers.assert_autoregressive(dependency, ordering)
  # Every output but the first sees some earlier input, in particular the previous
  # channel of its own pixel (through the centre taps) where there is one.
  assert not dependency[0].any() and dependency[1:].any(axis=1).all()
  channels = event_shape[-1]
  for j in range(dependency.shape[0]):
    if j % channels:
      assert dependency[j, j - 1], f'output {j} does not see the channel before it'


NORMALISATION_CASES = {
    'binary-2x2': dict(event_shape=(2, 2, 1), num_levels=2),
    'binary-3x3': dict(event_shape=(3, 3, 1), num_levels=2),
    'binary-2x2-conditional': dict(event_shape=(2, 2, 1), num_levels=2, num_classes=3),
    'ternary-2x2-categorical': dict(event_shape=(2, 2, 1), num_levels=3),
    'binary-rgb-1x2': dict(event_shape=(1, 2, 3), num_levels=2),
}


@pytest.mark.parametrize('case', NORMALISATION_CASES)
def test_log_prob_sums_to_one(case):
  model = _model(**NORMALISATION_CASES[case])
  variables = helpers.random_variables(model, scale=0.5)
  log_prob = jax.jit(lambda x, y: model.apply(variables, x, y, method='log_prob'))
  for c in range(model.num_classes) if model.num_classes else [None]:
    helpers.assert_normalised(
        lambda x, c=c: log_prob(x, None if c is None else jnp.full([x.shape[0]], c)),
        model.event_shape, model.num_levels)


def test_logits_shapes_and_impls_agree_on_one_parameter_tree():
  x = jnp.asarray(np.random.default_rng(0).integers(0, 4, (2, 4, 5, 3)), jnp.int32)
  y = jnp.array([0, 1])
  models = {impl: _model((4, 5, 3), 4, num_classes=2, conv_impl=impl, num_residual_blocks=2,
                         first_kernel_size=5) for impl in ('xla', 'taps')}
  shapes = {impl: jax.eval_shape(m.init, jax.random.PRNGKey(0), x, y) for impl, m in models.items()}
  assert shapes['xla'] == shapes['taps']
  variables = helpers.random_variables(models['xla'])
  logits = jax.jit(lambda v: {impl: m.apply(v, x, y) for impl, m in models.items()})(variables)
  chex.assert_shape(logits['taps'], (2, 4, 5, 3, 4))
  assert logits['taps'].dtype == jnp.float32
  np.testing.assert_allclose(logits['taps'], logits['xla'], rtol=1e-5, atol=1e-5)
  bernoulli = _model((4, 5, 3), 2)
  chex.assert_shape(bernoulli.apply(helpers.random_variables(bernoulli), x % 2), (2, 4, 5, 3))


def test_class_bias_changes_the_logits():
  model = _model((3, 3, 1), 2, num_classes=2)
  variables = helpers.random_variables(model)
  logits = model.apply(variables, jnp.zeros((2, 3, 3, 1), jnp.int32), jnp.array([0, 1]))
  assert not np.allclose(logits[0], logits[1])
  with pytest.raises(ValueError, match='class-conditional'):
    model.apply(variables, jnp.zeros((2, 3, 3, 1), jnp.int32))


def test_loss_falls_and_samples_are_valid_levels():
  helpers.assert_learns_stripes(_model((4, 4, 1), 2))


@pytest.mark.parametrize('impl', ['xla', 'taps'])
@pytest.mark.parametrize('event_shape,num_levels,num_classes', [
    ((5, 4, 1), 2, None), ((4, 3, 1), 5, 3), ((3, 4, 3), 4, None)])
def test_cached_sampling_returns_the_naive_samples(impl, event_shape, num_levels, num_classes):
  # A 5x5 first layer and two blocks on small images: the windows reach the zero
  # padding above and beside the image, which the caches must reproduce.
  model = _model(event_shape, num_levels, num_classes=num_classes, num_residual_blocks=2,
                 first_kernel_size=5, conv_impl=impl)
  variables = helpers.random_variables(model, scale=0.2)
  given_mask = (np.arange(event_shape[0]) < 2)[:, None, None]  # The top rows given.
  helpers.assert_cached_sampling_equals_naive(model, variables, given_mask, all_levels=True)


def test_decode_equals_the_teacher_forced_logits_at_every_step():
  # The direct check behind sample equality: with x fixed, step t's decode output is
  # the teacher-forced logits of sub-pixel t (RGB, categorical, conditional).
  model = _model((3, 3, 3), 3, num_classes=2, num_residual_blocks=2)
  variables = helpers.random_variables(model, scale=0.5)
  x = jnp.asarray(np.random.default_rng(1).integers(0, 3, (4, 3, 3, 3)), jnp.int32)
  y = jnp.array([0, 1, 1, 0])
  expected = model.apply(variables, x, y).reshape(4, 27, 3)
  step = jax.jit(lambda t, cache: model.apply({**variables, **cache}, x, t, y, method='decode',
                                              mutable=['cache']))
  cache = {}
  for t in range(27):
    logits, cache = step(t, cache)
    np.testing.assert_allclose(logits[:, 0], expected[:, t], rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_log_prob():
  helpers.assert_bfloat16_matches_float32(_model((4, 4, 3), 4, dtype=jnp.bfloat16))


def test_build_resolves_likelihood_and_options():
  binary = build_model('pixelcnn', helpers.dataset_info((8, 8, 1), 2, 10),
                       {'conditional': True, 'num_residual_blocks': 2, 'conv_impl': 'xla'})
  assert isinstance(binary, PixelCNN)
  assert (binary.likelihood, binary.num_classes, binary.num_residual_blocks) == ('bernoulli', 10, 2)
  assert binary.conv_impl == 'xla' and binary.event_shape == (8, 8, 1)
  rgb = build_model('pixelcnn', helpers.dataset_info((8, 8, 3), 256), {}, dtype=jnp.bfloat16)
  assert (rgb.likelihood, rgb.num_levels, rgb.num_classes, rgb.dtype) == (
      'categorical', 256, None, jnp.bfloat16)


@pytest.mark.parametrize('options,match', [
    ({'num_residual_blocks': -1}, 'num_residual_blocks'),
    ({'stack_channels': 0}, 'stack_channels'),
    ({'residual_channels': 2}, 'residual_channels'),
    ({'head_channels': 4.0}, 'head_channels'),
    ({'num_residual_blocks': True}, 'num_residual_blocks'),
    ({'first_kernel_size': 4}, 'odd'),
    ({'first_kernel_size': 1}, 'first_kernel_size'),
    ({'likelihood': 'bernoulli'}, 'binary'),
    ({'likelihood': 'logistic'}, 'likelihood'),
    ({'conv_impl': 'cudnn'}, 'conv_impl'),
    ({'conditional': True}, 'labels'),
    ({'conditional': 'yes'}, 'conditional'),
    ({'kernel_size': 3}, 'unknown option'),
])
def test_build_refuses(options, match):
  with pytest.raises(ConfigError, match=match) as error:
    build_model('pixelcnn', helpers.dataset_info((4, 4, 3), 4), options)
  assert '\n' not in str(error.value)


@pytest.mark.parametrize('shape,num_levels,match', [
    ((16,), 2, 'images'), ((4, 4), 2, 'images'), ((4, 4, 1), None, '--quantize')])
def test_build_refuses_data_it_cannot_model(shape, num_levels, match):
  with pytest.raises(ConfigError, match=match):
    build_model('pixelcnn', helpers.dataset_info(shape, num_levels), {})
