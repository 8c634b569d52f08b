"""PixelCNN++: shifted convolutions, causality by Jacobian over pixels, normalisation,
joint sampling of a pixel's channels, cached sampling, dropout, learning, the script,
builder errors."""

import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dulx import sampling
from dulx.errors import ConfigError
from dulx.models import build_model
from dulx.models.autoregressive.pixelcnn_pp import PixelCNNPP
from dulx.nn.shifted_conv import ShiftedConv2D, down_shift, right_shift
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(num_filters=8, num_resnet=1, num_scales=2, num_components=2, dropout=0.0)


def _model(event_shape, num_levels, **fields):
  return PixelCNNPP(event_shape=event_shape, num_levels=num_levels, **{**TINY, **fields})


def _reference_conv(x, kernel, shift, strides, transpose):
  """The shifted (transposed) convolution by its definition in dulx.nn.shifted_conv."""
  batch, height, width, _ = x.shape
  kh, kw, _, features = kernel.shape
  s = strides
  if not transpose:
    left = (kw - 1) // 2 if shift == 'down' else kw - 1
    out = np.zeros((batch, -(-height // s), -(-width // s), features))
    for i, j, r, c in np.ndindex(out.shape[1], out.shape[2], kh, kw):
      h, w = s * i + r - (kh - 1), s * j + c - left
      if 0 <= h < height and 0 <= w < width:
        out[:, i, j] += x[:, h, w] @ kernel[r, c]
    return out
  crop = (kw - 1) // 2 if shift == 'down' else 0
  out = np.zeros((batch, s * height, s * width, features))
  for i, j, r, c in np.ndindex(height, width, kh, kw):
    p, q = s * i + r, s * j + c - crop
    if p < s * height and 0 <= q < s * width:
      out[:, p, q] += x[:, i, j] @ kernel[r, c]
  return out


@pytest.mark.parametrize('shift,kernel_size', [('down', (2, 3)), ('down_right', (2, 2)),
                                               ('down', (1, 3)), ('down_right', (2, 1))])
def test_shifted_convolutions_follow_their_definition(shift, kernel_size):
  rng = np.random.default_rng(0)
  for strides, transpose, size in [(1, False, (5, 6)), (2, False, (5, 6)), (2, True, (3, 4)),
                                   (1, True, (3, 4))]:
    x = rng.normal(size=(2, *size, 2)).astype(np.float32)
    conv = ShiftedConv2D(3, kernel_size, shift, strides=strides, transpose=transpose)
    variables = conv.init(jax.random.PRNGKey(0), x)
    variables = jax.tree.map(lambda p: p + 0.1, variables)  # A nonzero bias too.
    expected = _reference_conv(x, np.asarray(variables['params']['kernel']), shift, strides,
                               transpose) + np.asarray(variables['params']['bias'])
    np.testing.assert_allclose(conv.apply(variables, x), expected, rtol=1e-5, atol=1e-5)
    if transpose:
      with pytest.raises(ValueError, match='transposed'):
        conv.apply(variables, x, method='window')
    else:  # The same convolution on an input padded by the caller (cached sampling).
      padded = np.pad(x, ((0, 0), *conv.padding(), (0, 0)))
      np.testing.assert_allclose(conv.apply(variables, padded, method='window'), expected,
                                 rtol=1e-5, atol=1e-5)
  x = jnp.arange(6.0).reshape(1, 2, 3, 1)
  np.testing.assert_array_equal(down_shift(x)[0, :, :, 0], [[0, 0, 0], [0, 1, 2]])
  np.testing.assert_array_equal(right_shift(x)[0, :, :, 0], [[0, 0, 1], [0, 3, 4]])


def test_shifted_convolutions_refuse_bad_shapes():
  x = jnp.zeros((1, 4, 4, 2))
  with pytest.raises(ValueError, match='odd'):
    ShiftedConv2D(2, (2, 2), 'down').init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match='shift'):
    ShiftedConv2D(2, (2, 3), 'up').init(jax.random.PRNGKey(0), x)


def _pixel_dependency(model, variables, u, y=None):
  """[HW, HW] bool: pixel j's mixture parameters depend on some channel of pixel i."""
  height, width, channels = model.event_shape
  # The parameters of a pixel stand for each of its channels, so dependency_matrix
  # sees outputs [B, H, W, C, P] shaped like the inputs.
  network = lambda u: jnp.repeat(
      model.apply(variables, u, y, method='network')[..., None, :], channels, axis=-2)
  dependency = helpers.dependency_matrix(network, u)
  pixels = height * width
  return dependency.reshape(pixels, channels, pixels, channels).any(axis=(1, 3))


def test_each_pixel_sees_exactly_the_pixels_before_it():
  # RGB, class-conditional, odd size (5 -> 3 -> 5: the up-sampling crops), two scales:
  # every path of the network. Every parameter is random, biases included.
  model = _model((5, 5, 3), 4, num_classes=3)
  variables = helpers.random_variables(model, scale=0.5)
  u = jax.random.uniform(jax.random.PRNGKey(1), (4, 5, 5, 3))
  dependency = _pixel_dependency(model, variables, u, jnp.array([2]))
  # Strictly earlier pixels only (none of the pixel's own channels), and all of them:
  # the two streams leave no blind spot.
  helpers.assert_autoregressive(dependency, np.arange(25), dense=True)
  np.testing.assert_array_equal(model.ordering(), np.arange(75))
  assert model.dims_per_step == 3


NORMALISATION_CASES = {
    'binary-2x2-conditional': dict(event_shape=(2, 2, 1), num_levels=2, num_classes=2),
    'binary-3x3': dict(event_shape=(3, 3, 1), num_levels=2),
    'ternary-2x2': dict(event_shape=(2, 2, 1), num_levels=3, num_scales=1),
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


def test_samples_follow_the_joint_distribution():
  # Two RGB binary pixels: 64 images. The sampler draws a pixel's channels jointly
  # (dims_per_step = 3, one shared component), which must give exp(log_prob).
  model = _model((1, 2, 3), 2)
  variables = helpers.random_variables(model, seed=1, scale=0.5)
  points = helpers.all_points(model.event_shape, 2)
  log_prob = jax.jit(lambda x: model.apply(variables, x, method='log_prob'))
  probs = np.exp(np.asarray(log_prob(points), np.float64))
  samples = sampling.sample(model, variables, jax.random.PRNGKey(0), 4000, method='naive')
  helpers.assert_frequencies_match(np.asarray(samples), probs / probs.sum(), 2)


def test_samples_are_levels_and_completion_keeps_given_pixels():
  model = _model((4, 3, 3), 9, num_classes=2)
  variables = helpers.random_variables(model, scale=0.5)
  num = 6
  y = jnp.array([0, 1, 0, 1, 1, 0])
  given = jnp.asarray(np.random.default_rng(0).integers(0, 9, (num, 4, 3, 3)), jnp.int32)
  given_mask = np.zeros((num, 4, 3, 3), bool)
  given_mask[:, :2] = True  # The top half, as in image completion.
  given_mask[:, 3, 1, 0] = True  # And one channel of a later pixel.
  completed = sampling.sample(model, variables, jax.random.PRNGKey(1), num, y=y, given=given,
                              given_mask=given_mask, temperature=0.8)
  chex.assert_shape(completed, (num, 4, 3, 3))
  assert completed.dtype == jnp.int32
  assert completed.min() >= 0 and completed.max() < 9
  np.testing.assert_array_equal(np.asarray(completed)[given_mask], np.asarray(given)[given_mask])
  assert np.any(np.asarray(completed)[~given_mask] != np.asarray(given)[~given_mask])


# Odd and even sizes (the crops after up-sampling: 5 -> 3 -> 6 -> 5, 7 -> 4 -> 2 -> 4 -> 8
# -> 7), one to three scales, RGB, unconditional and class-conditional.
CACHE_CASES = {
    'binary-5x6': dict(event_shape=(5, 6, 1), num_levels=2),
    'rgb-4x3-conditional': dict(event_shape=(4, 3, 3), num_levels=4, num_classes=3),
    'binary-7x7-3-scales': dict(event_shape=(7, 7, 1), num_levels=2, num_scales=3),
    'ternary-3x4-1-scale-conditional': dict(event_shape=(3, 4, 1), num_levels=3, num_classes=2,
                                            num_scales=1),
}


@pytest.mark.parametrize('case', CACHE_CASES)
def test_decode_returns_the_teacher_forced_parameters_at_every_step(case):
  # Step t sees x with the pixels before t drawn and fresh noise from pixel t on: what
  # earlier steps cached must be final when a step reads it, and the noise must not leak.
  # Weights at scale 0.2 keep the parameters O(1), so the tolerance is float rounding.
  model = _model(**CACHE_CASES[case])
  variables = helpers.random_variables(model, scale=0.2)
  height, width, channels = model.event_shape
  num, steps = 3, height * width
  rng = np.random.default_rng(0)
  x = rng.integers(0, model.num_levels, (num, height, width, channels))
  noise = rng.integers(0, model.num_levels, (steps, num, height, width, channels))
  drawn = (np.arange(steps)[:, None] > np.arange(steps)).reshape(steps, 1, height, width, 1)
  xs = jnp.asarray(np.where(drawn, x, noise), jnp.int32)  # [steps, B, H, W, C]
  y = None if model.num_classes is None else jnp.arange(num) % model.num_classes

  @jax.jit
  def decode_all(xs):
    out, cache = model.apply(variables, xs[0], 0, y, method='decode', mutable=['cache'])

    def step(cache, inputs):
      t, x = inputs
      out, cache = model.apply({**variables, **cache}, x, t, y, method='decode',
                               mutable=['cache'])
      return cache, out

    _, outs = jax.lax.scan(step, cache, (jnp.arange(1, steps), xs[1:]))
    return jnp.concatenate([out[None], outs])  # [steps, B, P]

  expected = model.apply(variables, jnp.asarray(x, jnp.int32), y)
  expected = expected.reshape(num, steps, -1).transpose(1, 0, 2)
  assert np.abs(expected).max() > 1  # Parameters far from zero: a real comparison.
  np.testing.assert_allclose(decode_all(xs), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('case', CACHE_CASES)
def test_cached_sampling_returns_the_naive_samples(case):
  model = _model(**CACHE_CASES[case])
  variables = helpers.random_variables(model, scale=0.2)
  given_mask = np.zeros(model.event_shape, bool)  # The top rows and the last pixel given.
  given_mask[:2], given_mask[-1, -1] = True, True
  helpers.assert_cached_sampling_equals_naive(model, variables, given_mask, all_levels=True)


def test_dropout_only_when_training():
  model = _model((4, 4, 1), 17, dropout=0.5)
  variables = helpers.random_variables(model, scale=0.5)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 17, (2, 4, 4, 1)), jnp.int32)
  apply = jax.jit(lambda rng: [model.apply(variables, x, train=train, rngs={'dropout': rng})
                               for train in (True, False)])
  (train_0, eval_0), (train_1, eval_1) = apply(jax.random.PRNGKey(0)), apply(jax.random.PRNGKey(1))
  assert not np.allclose(train_0, train_1)
  np.testing.assert_array_equal(eval_0, eval_1)


def test_loss_falls():
  x, rng = helpers.noisy_stripes(), jax.random.PRNGKey(0)
  model = _model((4, 4, 1), 2, dropout=0.1, num_scales=1)
  params = helpers.random_variables(model, scale=0.1)['params']
  nll = lambda p, r: -model.apply({'params': p}, x, train=True, method='log_prob',
                                  rngs={'dropout': r}).mean()
  _, losses = helpers.fit_adam(nll, params, rng, num_steps=40, learning_rate=1e-2)
  assert np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0], losses


def test_script_runs_on_digits(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'experiments', 'pixelcnn_pp.py'),
       '--flagfile=experiments/configs/pixelcnn_pp_digits.flags', f'--workdir={tmp_path}',
       '--num_filters=4', '--num_scales=2', '--num_components=2', '--batch_size=16',
       '--num_steps=2', '--eval_every=0', '--checkpoint_every=0', '--num_samples=2',
       '--eval_split=train[1500:1532]'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out['step'] == 2 and np.isfinite(out['bits_per_dim'])


def test_build_resolves_options():
  model = build_model('pixelcnn_pp', helpers.dataset_info((28, 28, 1), 256, 10),
                      {'conditional': True, 'num_filters': 32, 'num_scales': 3, 'dropout': 0})
  assert isinstance(model, PixelCNNPP)
  assert (model.num_levels, model.num_classes, model.num_filters, model.dropout) == (
      256, 10, 32, 0.0)
  rgb = build_model('pixelcnn_pp', helpers.dataset_info((8, 8, 3), 256), {}, dtype=jnp.bfloat16)
  assert (rgb.num_classes, rgb.dtype, rgb.num_components, rgb.dims_per_step) == (
      None, jnp.bfloat16, 10, 3)


@pytest.mark.parametrize('options,match', [
    ({'num_filters': 0}, 'num_filters'),
    ({'num_resnet': 0}, 'num_resnet'),
    ({'num_components': 2.0}, 'num_components'),
    ({'num_scales': 0}, 'num_scales'),
    ({'num_scales': 5}, 'at most 4'),
    ({'dropout': 1.0}, 'dropout'),
    ({'dropout': -0.1}, 'dropout'),
    ({'dropout': True}, 'dropout'),
    ({'conditional': True}, 'labels'),
    ({'likelihood': 'categorical'}, 'unknown option'),
])
def test_build_refuses(options, match):
  with pytest.raises(ConfigError, match=match) as error:
    build_model('pixelcnn_pp', helpers.dataset_info((8, 8, 3), 256), options)
  assert '\n' not in str(error.value)


@pytest.mark.parametrize('shape,num_levels,match', [
    ((16,), 2, 'images'), ((4, 4), 2, 'images'), ((4, 4, 1), None, '--quantize')])
def test_build_refuses_data_it_cannot_model(shape, num_levels, match):
  with pytest.raises(ConfigError, match=match):
    build_model('pixelcnn_pp', helpers.dataset_info(shape, num_levels), {})
