"""What every source returns: arrays plus the metadata models are built from."""

import dataclasses
from typing import NamedTuple

import numpy as np

from dulx.errors import DataError

__all__ = ['DatasetInfo', 'Dataset', 'Raw', 'images', 'one_line']

IMAGE_LEVELS = 256  # 8-bit images: levels 0..255.


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """The shape of one example and how its values are to be modelled.

  Attributes:
    spec: the dataset spec, e.g. 'digits', 'idx:/path/x.gz', 'toy2d:two_moons'.
    split: the split with its base name filled in, e.g. 'train[:8000]'.
    shape: per-example shape: images (H, W, C), always with C; toy2d (2,).
    num_levels: discrete levels per dimension (17 digits, 256 MNIST, 2 binarized);
      None for continuous data.
    num_classes: number of classes when labels exist, else None.
    bounds: (low, high) value range of continuous data (toy sets); for toy data
      quantized into k bins, the range the bins divide.
    alphabet: for text, the character of each level (level i is alphabet[i]); else None.
  """
  spec: str
  split: str
  shape: tuple[int, ...]
  num_levels: int | None
  num_classes: int | None
  bounds: tuple[float, float] | None = None
  alphabet: str | None = None


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A whole split in memory.

  Attributes:
    x: [N, *info.shape]: int32 levels in [0, num_levels) for discrete data, float32
      for continuous data; with `stochastic_binarization`, float32 probabilities in
      [0, 1] from which every batch draws its binary images afresh.
    y: [N] int32 labels in [0, num_classes), or None.
    info: the metadata.
    stochastic_binarization: x holds Bernoulli probabilities, info.num_levels is 2.
  """
  x: np.ndarray
  y: np.ndarray | None
  info: DatasetInfo
  stochastic_binarization: bool = False


class Raw(NamedTuple):
  """A source's whole base split, before `load` slices it and casts x to int32/float32."""
  x: np.ndarray  # [N, *shape]
  y: np.ndarray | None  # [N] integers
  num_levels: int | None
  num_classes: int | None
  bounds: tuple[float, float] | None = None
  alphabet: str | None = None  # Text: the character of each level.


def one_line(error: BaseException, limit: int = 200) -> str:
  """The first line of an exception's message (its type when empty), at most `limit` chars."""
  text = (str(error).strip().splitlines() or [type(error).__name__])[0]
  return text if len(text) <= limit else text[:limit - 3] + '...'


def images(x: np.ndarray, y: np.ndarray | None, where: str,
           num_classes: int | None = None) -> Raw:
  """Checks 8-bit images and their labels, adding the channel axis where missing.

  Args:
    x: [N, H, W] or [N, H, W, C] uint8.
    y: [N] non-negative integers, or None.
    where: names the origin (file or spec) in error messages.
    num_classes: when None, the largest label + 1.

  Returns:
    Raw with x uint8 [N, H, W, C], 256 levels.

  Raises:
    DataError: wrong dtype or rank, an empty axis, or labels that do not fit.
  """
  if x.dtype != np.uint8 or x.ndim not in (3, 4):
    raise DataError(f'{where}: images must be uint8 of shape [N, H, W] or [N, H, W, C], '
                    f'got {x.dtype} of shape {list(x.shape)}.')
  if x.ndim == 3:
    x = x[..., None]
  if 0 in x.shape:
    raise DataError(f'{where}: images of shape {list(x.shape)} have an empty axis.')
  if y is not None:
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1 or len(y) != len(x):
      raise DataError(f'{where}: labels must be integers of shape [{len(x)}] (one per image), '
                      f'got {y.dtype} of shape {list(y.shape)}.')
    if y.min() < 0:
      raise DataError(f'{where}: labels must be >= 0, found {int(y.min())}.')
    if num_classes is None:
      num_classes = int(y.max()) + 1
  return Raw(x, y, IMAGE_LEVELS, num_classes if y is not None else None)
