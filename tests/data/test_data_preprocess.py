"""Binarization (fixed and dynamic) and quantization (discrete and continuous)."""

import dataclasses

import numpy as np
import pytest

from dulx import data
from dulx.errors import ConfigError


@pytest.fixture(scope='module')
def digits():
  return data.load('digits')


@pytest.fixture(scope='module')
def moons():
  return data.load('toy2d:two_moons', 'test')


def test_none_is_identity(digits):
  assert data.preprocess(digits) is digits


def test_threshold(digits):
  ds = data.preprocess(digits, binarize='threshold')
  assert ds.x.dtype == np.int32 and set(np.unique(ds.x)) == {0, 1}
  np.testing.assert_array_equal(ds.x, (digits.x / 16 > 0.5).astype(np.int32))  # x >= 9 of 0..16.
  assert ds.info == dataclasses.replace(digits.info, num_levels=2)
  assert not ds.stochastic_binarization
  np.testing.assert_array_equal(ds.y, digits.y)
  assert digits.info.num_levels == 17 and digits.x.max() == 16  # The input is untouched.


def test_threshold_256_levels():
  info = data.DatasetInfo('fake', 'train', (256,), 256, None)
  levels = np.arange(256, dtype=np.int32)[None]
  ds = data.preprocess(data.Dataset(levels, None, info), binarize='threshold')
  np.testing.assert_array_equal(ds.x[0], levels[0] >= 128)  # 127/255 < 1/2 < 128/255.


def test_stochastic_marks_probabilities(digits):
  ds = data.preprocess(digits, binarize='stochastic')
  assert ds.stochastic_binarization and ds.info.num_levels == 2
  assert ds.x.dtype == np.float32
  np.testing.assert_allclose(ds.x, digits.x / 16.0, rtol=1e-6)
  assert (ds.x.min(), ds.x.max()) == (0.0, 1.0)


@pytest.mark.parametrize('quantize', [2, 4, 8, 17])
def test_quantize_discrete(digits, quantize):
  ds = data.preprocess(digits, quantize=quantize)
  assert ds.info.num_levels == quantize and ds.x.dtype == np.int32
  np.testing.assert_array_equal(ds.x, np.floor(digits.x * quantize / 17).astype(np.int32))
  assert ds.x.min() == 0 and ds.x.max() == quantize - 1  # Both ends are used.
  # Monotone: a brighter pixel never lands in a lower level.
  order = np.argsort(digits.x.ravel(), kind='stable')
  assert np.all(np.diff(ds.x.ravel()[order]) >= 0)


def test_quantize_keeps_levels_of_8_bit_data_evenly():
  info = data.DatasetInfo('fake', 'train', (256,), 256, None)
  ds = data.preprocess(data.Dataset(np.arange(256, dtype=np.int32)[None], None, info), quantize=4)
  np.testing.assert_array_equal(np.bincount(ds.x[0]), [64, 64, 64, 64])


@pytest.mark.parametrize('quantize', [2, 16, 64])
def test_quantize_continuous(moons, quantize):
  ds = data.preprocess(moons, quantize=quantize)
  assert ds.info.num_levels == quantize and ds.x.dtype == np.int32
  assert ds.info.bounds == moons.info.bounds and ds.info.shape == (2,)
  assert ds.x.min() >= 0 and ds.x.max() < quantize
  # Every point lies in its bin: |centre of bin - x| <= half a bin width.
  low, high = moons.info.bounds
  width = (high - low) / quantize
  centres = low + (ds.x + 0.5) * width
  assert np.all(np.abs(centres - moons.x) <= width / 2 + 1e-6)


def test_quantize_continuous_clips():
  info = data.DatasetInfo('fake', 'train', (1,), None, None, bounds=(-1.0, 1.0))
  x = np.array([[-5.0], [-1.0], [-1e-6], [0.0], [0.999], [1.0], [7.0]], np.float32)
  ds = data.preprocess(data.Dataset(x, None, info), quantize=4)
  np.testing.assert_array_equal(ds.x[:, 0], [0, 0, 1, 2, 3, 3, 3])


@pytest.mark.parametrize('kwargs, match', [
    ({'binarize': 'dynamic'}, "binarize='dynamic' is not one of none, threshold, stochastic"),
    ({'quantize': 1}, 'must be an integer >= 2'),
    ({'quantize': 0}, 'must be an integer >= 2'),
    ({'quantize': 2.5}, 'must be an integer >= 2'),
    ({'quantize': True}, 'must be an integer >= 2'),
    ({'quantize': 18}, 'into 18 levels: it has only 17'),
    ({'binarize': 'threshold', 'quantize': 4}, 'cannot be combined'),
])
def test_bad_options(digits, kwargs, match):
  with pytest.raises(ConfigError, match=match):
    data.preprocess(digits, **kwargs)


@pytest.mark.parametrize('binarize', ['threshold', 'stochastic'])
def test_binarize_continuous_fails(moons, binarize):
  with pytest.raises(ConfigError, match='cannot binarize toy2d:two_moons: its data are continuous'):
    data.preprocess(moons, binarize=binarize)


def test_quantize_continuous_without_bounds_fails():
  info = data.DatasetInfo('fake', 'train', (1,), None, None)
  with pytest.raises(ConfigError, match='without bounds'):
    data.preprocess(data.Dataset(np.zeros((3, 1), np.float32), None, info), quantize=4)


def test_no_second_pass_on_stochastic(digits):
  ds = data.preprocess(digits, binarize='stochastic')
  for kwargs in ({'binarize': 'threshold'}, {'quantize': 2}):
    with pytest.raises(ConfigError, match='already stochastically binarized'):
      data.preprocess(ds, **kwargs)
