"""`load(spec, split)`: every dataset spec dulx knows, sliced by a tfds-style split.

Specs:
  digits         scikit-learn's embedded 8x8 digits: int32 [1797, 8, 8, 1], 17 levels, 10 classes.
  toy2d:NAME     procedural 2-D densities (dulx.data.toy), float32 [N, 2] in (-4, 4).
  toy1d:NAME     procedural 1-D densities, float32 [N, 1] in (-4, 4).
  idx:PATH       an MNIST IDX images file (+ its labels file beside it), 256 levels.
  npz:PATH       a .npz archive with x uint8 [N, H, W(, C)] and optional y, 256 levels.
  tfds:NAME      an image dataset of tensorflow-datasets (downloads it when needed).
  text:NAME[:T[:S]]  embedded English text (dulx.data.text) in windows of T characters
                     (64); training windows start every S characters (T: non-overlapping).
"""

from collections.abc import Callable
import dataclasses

import numpy as np

from dulx.data import files
from dulx.data import splits
from dulx.data import text
from dulx.data import toy
from dulx.data.dataset import Dataset
from dulx.data.dataset import DatasetInfo
from dulx.data.dataset import Raw
from dulx.data.dataset import images
from dulx.data.dataset import one_line
from dulx.errors import DataError

__all__ = ['SPEC_PREFIXES', 'load']

SPEC_PREFIXES = ('digits', 'toy2d:', 'toy1d:', 'idx:', 'npz:', 'tfds:', 'text:')
_USAGE = 'digits, toy2d:NAME, toy1d:NAME, idx:PATH, npz:PATH, tfds:NAME, text:NAME[:T[:S]]'
_DIGITS_LEVELS = 17  # Pixel values 0..16: counts of set pixels in 4x4 blocks of a 32x32 bitmap.


def _digits(arg: str, split: str) -> Raw:
  """The 1797 8x8 digits of the UCI handwritten digits set, embedded in scikit-learn."""
  del arg, split
  from sklearn import datasets  # Imported here: it is slow to import and only digits needs it.
  digits = datasets.load_digits()
  return Raw(digits.images.astype(np.int32)[..., None], digits.target, _DIGITS_LEVELS, 10)


def _tfds(name: str, split: str) -> Raw:
  """`split` of the tensorflow-datasets image dataset `name`, whole, as numpy arrays.

  tensorflow-datasets (and TensorFlow, which its `load` needs) is imported only here.
  Every failure (not installed, no network, unknown name or split) becomes one
  DataError line.
  """
  where = f'tfds:{name}'
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise DataError(f'{where} needs tensorflow-datasets and tensorflow '
                    f'(pip install tensorflow-datasets tensorflow): {one_line(e)}.') from None
  try:
    data, info = tfds.load(name, split=split, batch_size=-1, with_info=True)
    arrays = tfds.as_numpy(data)
  except Exception as e:
    # tfds and TensorFlow raise many unrelated types (DatasetNotFoundError, AssertionError,
    # ConnectionError, tf.errors.*); all mean the same to the user: it cannot be loaded.
    raise DataError(f'{where} split {split!r} could not be loaded: {one_line(e)}') from None
  if 'image' not in arrays:
    raise DataError(f'{where} has no "image" feature (it has: {", ".join(sorted(arrays))}); '
                    'dulx reads image datasets.')
  y, num_classes = arrays.get('label'), None
  if y is not None:
    num_classes = getattr(info.features['label'], 'num_classes', None)
  return images(np.asarray(arrays['image']), y, where, num_classes)


@dataclasses.dataclass(frozen=True)
class _Source:
  read: Callable[[str, str], Raw]  # (argument, base split name) -> the whole base split.
  splits: tuple[str, ...] | None  # None: the source checks split names itself.
  argument: str = ''  # What follows 'prefix:' ('' = nothing may follow).


_SOURCES = {
    'digits': _Source(_digits, ('train',)),
    'toy2d': _Source(lambda name, split: toy.load('toy2d', name, split), tuple(toy.SIZES), 'NAME'),
    'toy1d': _Source(lambda name, split: toy.load('toy1d', name, split), tuple(toy.SIZES), 'NAME'),
    'idx': _Source(lambda path, split: files.read_idx(path), ('train',), 'PATH'),
    'npz': _Source(lambda path, split: files.read_npz(path), ('train',), 'PATH'),
    'tfds': _Source(_tfds, None, 'NAME'),
    'text': _Source(text.load, text.SPLITS, 'NAME'),
}


def _source(spec: str) -> tuple[_Source, str]:
  prefix, colon, arg = spec.partition(':') if isinstance(spec, str) else ('', '', '')
  source = _SOURCES.get(prefix)
  if source is None or bool(colon) != bool(source.argument):
    raise DataError(f'unknown dataset {spec!r}; known: {_USAGE}.')
  if source.argument and not arg:
    raise DataError(f'dataset {spec!r} is missing its {source.argument}: '
                    f'use {prefix}:{source.argument}.')
  return source, arg


def load(spec: str, split: str = splits.DEFAULT_SPLIT) -> Dataset:
  """Loads `split` of the dataset `spec` into memory.

  Args:
    spec: one of 'digits', 'toy2d:NAME', 'toy1d:NAME', 'idx:PATH', 'npz:PATH', 'tfds:NAME',
      'text:NAME[:T[:S]]'.
    split: a tfds-style split (see dulx.data.splits): 'train', 'train[:80%]', '[8000:]', ...
      digits, idx and npz have the one split 'train' (the whole set); toy sets have
      'train' (20000 points) and 'test' (5000); text has 'train' (the first 90% of the
      characters) and 'test' (the rest); tfds datasets have their own.

  Returns:
    Dataset with x int32 levels [N, *shape] (images [N, H, W, C], text [N, T]) or
    float32 points [N, D] (toy sets), y int32 [N] or None, and its DatasetInfo.

  Raises:
    DataError (one line): an unknown spec, a missing or corrupt file, an unknown,
      malformed, out-of-range or empty split.
  """
  source, arg = _source(spec)
  parsed = splits.parse(split)
  if source.splits is not None and parsed.name not in source.splits:
    raise DataError(f'{spec} has no split {parsed.name!r}; '
                    f'its splits are: {", ".join(source.splits)}.')
  raw = source.read(arg, parsed.name)
  start, stop = parsed.indices(len(raw.x), spec)
  x = raw.x[start:stop].astype(np.int32 if raw.num_levels else np.float32)
  y = None if raw.y is None else raw.y[start:stop].astype(np.int32)
  info = DatasetInfo(spec=spec, split=str(parsed), shape=tuple(x.shape[1:]),
                     num_levels=raw.num_levels, num_classes=raw.num_classes, bounds=raw.bounds,
                     alphabet=raw.alphabet)
  return Dataset(x, y, info)
