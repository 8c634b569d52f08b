"""Every dataset source of `dulx.data.load`, good input and bad."""

import gzip
from pathlib import Path
import struct
import sys
import types

import chex
import numpy as np
import pytest

from dulx import data
from dulx.data import toy
from dulx.errors import DataError

MNIST = Path(__file__).resolve().parents[2] / '..' / 'shared' / 'data' / 'mnist'
MNIST_IMAGES = MNIST / 't10k-images-idx3-ubyte.gz'
needs_mnist = pytest.mark.skipif(not MNIST_IMAGES.exists(), reason=f'{MNIST_IMAGES} is absent')


def _assert_one_line(error: pytest.ExceptionInfo, *parts: str):
  message = str(error.value)
  assert message and '\n' not in message, message
  for part in parts:
    assert part in message, (part, message)


# digits.


def test_digits():
  ds = data.load('digits')
  chex.assert_shape(ds.x, (1797, 8, 8, 1))
  assert ds.x.dtype == np.int32 and ds.y.dtype == np.int32
  assert (ds.x.min(), ds.x.max()) == (0, 16)
  assert ds.info == data.DatasetInfo('digits', 'train', (8, 8, 1), 17, 10)
  np.testing.assert_array_equal(np.unique(ds.y), np.arange(10))
  assert np.bincount(ds.y).min() >= 170  # Every class is well represented (174..183).


def test_digits_slices_are_consistent():
  whole = data.load('digits')
  head, tail = data.load('digits', 'train[:80%]'), data.load('digits', '[80%:]')
  assert head.info.split == 'train[:80%]' and tail.info.split == 'train[80%:]'
  np.testing.assert_array_equal(np.concatenate([head.x, tail.x]), whole.x)
  np.testing.assert_array_equal(np.concatenate([head.y, tail.y]), whole.y)
  np.testing.assert_array_equal(data.load('digits', 'train[-100:]').x, whole.x[-100:])


# toy2d / toy1d.

TOY_SPECS = [f'toy2d:{name}' for name in toy.TOY2D] + [f'toy1d:{name}' for name in toy.TOY1D]


@pytest.mark.parametrize('spec', TOY_SPECS)
def test_toy_sets(spec):
  train, test = data.load(spec), data.load(spec, 'test')
  dim = 2 if spec.startswith('toy2d') else 1
  chex.assert_shape(train.x, (20000, dim))
  chex.assert_shape(test.x, (5000, dim))
  for ds in (train, test):
    assert ds.x.dtype == np.float32 and ds.y is None
    assert ds.info.num_levels is None and ds.info.bounds == (-4.0, 4.0)
    assert np.all((ds.x > -4.0) & (ds.x < 4.0))
    assert ds.x.std(axis=0).min() > 0.5  # Spread out, not collapsed on a point.
  np.testing.assert_array_equal(data.load(spec).x, train.x)  # Deterministic.
  assert not np.array_equal(train.x[:5000], test.x)  # Another seed for test.
  # The two splits come from the same density: their means agree within 5 standard errors.
  diff = np.abs(train.x.mean(0) - test.x.mean(0))
  assert np.all(diff < 5 * train.x.std(0) * np.sqrt(1 / 20000 + 1 / 5000))


def test_toy_sets_differ():
  sets = [data.load(spec, 'test[:100]').x for spec in TOY_SPECS if spec.startswith('toy2d')]
  for i, a in enumerate(sets):
    for b in sets[i + 1:]:
      assert not np.allclose(a, b)


def test_toy_geometry():
  """Each 2-D set has the shape it is named after."""
  x = data.load('toy2d:eight_gaussians').x
  centres = 2.0 * np.stack([np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], -1)
  nearest = np.linalg.norm(x[:, None] - centres, axis=-1).argmin(1)
  assert np.all(np.linalg.norm(x - centres[nearest], axis=-1) < 6 * 0.2)
  assert np.bincount(nearest, minlength=8).min() > 20000 / 8 * 0.9
  cells = np.floor((data.load('toy2d:checkerboard').x + 3.0) / 1.5).astype(int)
  assert np.all((cells.sum(1) % 2) == 0)  # Only the white cells.
  radii = np.linalg.norm(data.load('toy2d:rings').x, axis=-1)
  gap = np.abs(radii[:, None] - np.array([0.75, 1.5, 2.25, 3.0])).min(1)
  assert np.all(gap < 6 * 0.08)
  x = data.load('toy1d:bimodal').x[:, 0]
  assert abs(np.mean(x < 0) - 0.35) < 0.02  # The lighter mode holds 35% of the mass.


def test_toy_errors():
  with pytest.raises(DataError) as e:
    data.load('toy2d:swiss_cheese')
  _assert_one_line(e, 'swiss_cheese', 'two_moons', 'spirals')
  with pytest.raises(DataError) as e:
    data.load('toy2d:two_moons', 'validation')
  _assert_one_line(e, "'validation'", 'train, test')
  with pytest.raises(DataError, match='out of range'):
    data.load('toy1d:bimodal', 'test[:5001]')


# idx.


def _idx(array: np.ndarray) -> bytes:
  return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f'>{array.ndim}I', *array.shape) + (
      array.astype(np.uint8).tobytes())


def _write(path: Path, content: bytes, gz: bool) -> Path:
  path.write_bytes(gzip.compress(content) if gz else content)
  return path


@pytest.fixture
def small_images():
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, (12, 5, 4), dtype=np.uint8), rng.integers(0, 7, 12, dtype=np.uint8)


@pytest.mark.parametrize('gz', [False, True])
def test_idx_images_and_labels(tmp_path, small_images, gz):
  x, y = small_images
  suffix = '.gz' if gz else ''
  path = _write(tmp_path / f'a-images-idx3-ubyte{suffix}', _idx(x), gz)
  _write(tmp_path / f'a-labels-idx1-ubyte{suffix}', _idx(y), gz)
  ds = data.load(f'idx:{path}')
  np.testing.assert_array_equal(ds.x, x[..., None].astype(np.int32))
  np.testing.assert_array_equal(ds.y, y)
  assert ds.x.dtype == np.int32 and ds.y.dtype == np.int32
  assert ds.info == data.DatasetInfo(f'idx:{path}', 'train', (5, 4, 1), 256, int(y.max()) + 1)
  np.testing.assert_array_equal(data.load(f'idx:{path}', 'train[3:-2]').y, y[3:-2])


def test_idx_labels_found_across_compression(tmp_path, small_images):
  x, y = small_images
  path = _write(tmp_path / 'b-images-idx3-ubyte.gz', _idx(x), gz=True)
  _write(tmp_path / 'b-labels-idx1-ubyte', _idx(y), gz=False)
  np.testing.assert_array_equal(data.load(f'idx:{path}').y, y)


def test_idx_without_labels(tmp_path, small_images):
  x, _ = small_images
  path = _write(tmp_path / 'pictures.idx', _idx(x), gz=False)
  ds = data.load(f'idx:{path}')
  assert ds.y is None and ds.info.num_classes is None
  np.testing.assert_array_equal(ds.x[..., 0], x)


@pytest.mark.parametrize('gz', [False, True])
@pytest.mark.parametrize('corrupt, match', [
    (lambda b: b[:-1], 'truncated or corrupt'),
    (lambda b: b + b'\0', 'truncated or corrupt'),
    (lambda b: b[:10], 'header truncated'),
    (lambda b: b'\x08\x03' + b[2:], 'bad magic number'),
    (lambda b: b'', 'bad magic number'),
    (lambda b: b[:2] + b'\x0d' + b[3:], 'element type 0x0d'),
    (lambda b: b[:3] + b'\x02' + b[4:], 'rank 2, expected 3'),
])
def test_idx_bad_images(tmp_path, small_images, corrupt, match, gz):
  path = _write(tmp_path / 'c-images-idx3-ubyte', corrupt(_idx(small_images[0])), gz)
  with pytest.raises(DataError, match=match) as e:
    data.load(f'idx:{path}')
  _assert_one_line(e, str(path))


def test_idx_bad_gzip(tmp_path, small_images):
  packed = gzip.compress(_idx(small_images[0]))
  for name, content in [('cut', packed[:len(packed) // 2]),
                        ('flipped', packed[:20] + bytes([packed[20] ^ 0xFF]) + packed[21:])]:
    path = tmp_path / f'{name}-images-idx3-ubyte.gz'
    path.write_bytes(content)
    with pytest.raises(DataError, match='cannot read') as e:
      data.load(f'idx:{path}')
    _assert_one_line(e, str(path))


def test_idx_labels_that_do_not_fit(tmp_path, small_images):
  x, y = small_images
  path = _write(tmp_path / 'd-images-idx3-ubyte', _idx(x), gz=False)
  labels = _write(tmp_path / 'd-labels-idx1-ubyte', _idx(y[:-1]), gz=False)
  with pytest.raises(DataError, match=r'labels must be integers of shape \[12\]') as e:
    data.load(f'idx:{path}')
  _assert_one_line(e, str(labels))
  _write(labels, _idx(y)[:-3], gz=False)
  with pytest.raises(DataError, match='truncated or corrupt') as e:
    data.load(f'idx:{path}')
  _assert_one_line(e, str(labels))


@needs_mnist
def test_idx_mnist():
  ds = data.load(f'idx:{MNIST_IMAGES}')
  chex.assert_shape(ds.x, (10000, 28, 28, 1))
  assert ds.x.dtype == np.int32 and (ds.x.min(), ds.x.max()) == (0, 255)
  assert (ds.info.num_levels, ds.info.num_classes) == (256, 10)
  np.testing.assert_array_equal(ds.y[:5], [7, 2, 1, 0, 4])  # The t10k set's first labels.
  np.testing.assert_array_equal(np.bincount(ds.y), [980, 1135, 1032, 1010, 982, 892, 958, 1028,
                                                   974, 1009])
  assert 30 < ds.x.mean() < 37  # Mean intensity 0.13 * 255: mostly black background.
  head = data.load(f'idx:{MNIST_IMAGES}', 'train[:8000]')
  np.testing.assert_array_equal(head.x, ds.x[:8000])
  with pytest.raises(DataError, match='out of range') as e:
    data.load(f'idx:{MNIST_IMAGES}', 'train[:20000]')
  _assert_one_line(e, '20000', '10000')


# npz.


def test_npz_good(tmp_path):
  rng = np.random.default_rng(1)
  x3 = rng.integers(0, 256, (9, 3, 4), dtype=np.uint8)
  x4 = rng.integers(0, 256, (9, 3, 4, 3), dtype=np.uint8)
  y = rng.integers(0, 5, 9).astype(np.int64)
  np.savez(tmp_path / 'gray.npz', x=x3, y=y)
  np.savez_compressed(tmp_path / 'rgb.npz', x=x4, other=np.zeros(3))
  gray = data.load(f'npz:{tmp_path / "gray.npz"}')
  np.testing.assert_array_equal(gray.x, x3[..., None])
  np.testing.assert_array_equal(gray.y, y)
  assert gray.y.dtype == np.int32
  assert gray.info == data.DatasetInfo(f'npz:{tmp_path / "gray.npz"}', 'train', (3, 4, 1), 256,
                                       int(y.max()) + 1)
  rgb = data.load(f'npz:{tmp_path / "rgb.npz"}', 'train[2:]')
  np.testing.assert_array_equal(rgb.x, x4[2:])
  assert rgb.y is None and rgb.info.shape == (3, 4, 3) and rgb.info.num_classes is None


@pytest.mark.parametrize('arrays, match', [
    ({'images': np.zeros((2, 3, 3), np.uint8)}, 'has no array "x" .*images'),
    ({'x': np.zeros((2, 3, 3), np.float32)}, 'must be uint8'),
    ({'x': np.zeros((2, 9), np.uint8)}, 'must be uint8 of shape'),
    ({'x': np.zeros((2, 3, 3, 1, 1), np.uint8)}, 'must be uint8 of shape'),
    ({'x': np.zeros((0, 3, 3), np.uint8)}, 'empty axis'),
    ({'x': np.zeros((2, 3, 3), np.uint8), 'y': np.zeros(3, np.int64)}, r'shape \[2\]'),
    ({'x': np.zeros((2, 3, 3), np.uint8), 'y': np.zeros((2, 1), np.int64)}, r'shape \[2\]'),
    ({'x': np.zeros((2, 3, 3), np.uint8), 'y': np.zeros(2, np.float32)}, 'must be integers'),
    ({'x': np.zeros((2, 3, 3), np.uint8), 'y': np.array([0, -1])}, 'must be >= 0'),
])
def test_npz_bad_arrays(tmp_path, arrays, match):
  path = tmp_path / 'bad.npz'
  np.savez(path, **arrays)
  with pytest.raises(DataError, match=match) as e:
    data.load(f'npz:{path}')
  _assert_one_line(e, str(path))


def test_npz_bad_files(tmp_path):
  good = tmp_path / 'good.npz'
  np.savez(good, x=np.zeros((4, 3, 3), np.uint8))
  cases = {'cut.npz': good.read_bytes()[:100], 'junk.npz': b'not an archive at all',
           'empty.npz': b''}
  for name, content in cases.items():
    (tmp_path / name).write_bytes(content)
  np.save(tmp_path / 'single.npy', np.zeros((4, 3, 3), np.uint8))
  np.savez(tmp_path / 'objects.npz', x=np.array([{'a': 1}], dtype=object))
  for name in [*cases, 'single.npy', 'objects.npz']:
    with pytest.raises(DataError, match='cannot read') as e:
      data.load(f'npz:{tmp_path / name}')
    _assert_one_line(e, str(tmp_path / name))


# Missing files and unknown specs.


@pytest.mark.parametrize('prefix', ['idx', 'npz'])
def test_missing_file(tmp_path, prefix):
  path = tmp_path / 'nowhere' / 'x.gz'
  with pytest.raises(DataError, match='not found') as e:
    data.load(f'{prefix}:{path}')
  _assert_one_line(e, str(path))
  with pytest.raises(DataError, match='is not a file'):
    data.load(f'{prefix}:{tmp_path}')


@pytest.mark.parametrize('spec', ['mnist', 'digits:8x8', 'toy3d:cube', 'csv:/tmp/a.csv', '', 'idx'])
def test_unknown_spec(spec):
  with pytest.raises(DataError) as e:
    data.load(spec)
  _assert_one_line(e, f'unknown dataset {spec!r}', 'digits', 'toy2d:', 'idx:', 'npz:', 'tfds:')


@pytest.mark.parametrize('spec', ['idx:', 'npz:', 'tfds:', 'toy2d:'])
def test_spec_without_argument(spec):
  with pytest.raises(DataError, match='is missing its') as e:
    data.load(spec)
  _assert_one_line(e, spec)


def test_spec_prefixes():
  assert data.SPEC_PREFIXES == ('digits', 'toy2d:', 'toy1d:', 'idx:', 'npz:', 'tfds:', 'text:')


@pytest.mark.parametrize('split, match', [
    ('test', "has no split 'test'"), ('train[', 'malformed'), ('train[:1798]', 'out of range'),
    ('train[100:100]', 'is empty')])
def test_bad_split(split, match):
  with pytest.raises(DataError, match=match) as e:
    data.load('digits', split)
  _assert_one_line(e)


# tfds, through a fake module in place of tensorflow_datasets.


class _FakeTfds:
  """Stands in for tensorflow_datasets: records its calls, returns arrays or raises."""

  def __init__(self, arrays=None, error=None):
    self.arrays, self.error, self.calls = arrays, error, []

  def load(self, name, **kwargs):
    self.calls.append((name, kwargs))
    if self.error is not None:
      raise self.error
    label = types.SimpleNamespace(num_classes=10)
    return self.arrays, types.SimpleNamespace(features={'label': label})

  def as_numpy(self, tree):
    return tree


@pytest.fixture
def fake_images():
  rng = np.random.default_rng(2)
  return {'image': rng.integers(0, 256, (20, 6, 6, 3), dtype=np.uint8),
          'label': rng.integers(0, 4, 20).astype(np.int64)}


def test_tfds(monkeypatch, fake_images):
  fake = _FakeTfds(fake_images)
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', fake)
  ds = data.load('tfds:fake_mnist', 'test[:50%]')
  assert [(name, kw['split']) for name, kw in fake.calls] == [('fake_mnist', 'test')]
  np.testing.assert_array_equal(ds.x, fake_images['image'][:10])
  np.testing.assert_array_equal(ds.y, fake_images['label'][:10])
  assert ds.x.dtype == np.int32 and ds.y.dtype == np.int32
  # num_classes comes from the dataset's label feature, not from the labels present.
  assert ds.info == data.DatasetInfo('tfds:fake_mnist', 'test[:50%]', (6, 6, 3), 256, 10)
  with pytest.raises(DataError, match='out of range'):
    data.load('tfds:fake_mnist', 'test[:21]')


def test_tfds_without_labels(monkeypatch, fake_images):
  fake = _FakeTfds({'image': fake_images['image']})
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', fake)
  ds = data.load('tfds:unlabelled')
  assert ds.y is None and ds.info.num_classes is None and ds.x.shape == (20, 6, 6, 3)


@pytest.mark.parametrize('error', [
    ConnectionError('Failed to establish a connection\nTraceback details'),
    ValueError('Unknown split "tarin". Should be one of [\'test\', \'train\'].'),
    AssertionError('Dataset fake: could not find data in /home/x/tensorflow_datasets.'),
])
def test_tfds_failures_become_one_line(monkeypatch, error):
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', _FakeTfds(error=error))
  with pytest.raises(DataError) as e:
    data.load('tfds:fake', 'tarin')
  _assert_one_line(e, 'tfds:fake', "'tarin'", str(error).splitlines()[0])


def test_tfds_not_an_image_dataset(monkeypatch):
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', _FakeTfds({'text': np.zeros(3)}))
  with pytest.raises(DataError, match='no "image" feature') as e:
    data.load('tfds:imdb_reviews')
  _assert_one_line(e, 'tfds:imdb_reviews', 'text')


def test_tfds_not_installed(monkeypatch):
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', None)  # Makes the import fail.
  with pytest.raises(DataError, match='needs tensorflow-datasets') as e:
    data.load('tfds:mnist')
  _assert_one_line(e, 'tfds:mnist')
