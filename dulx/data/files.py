"""Local image files: `idx:PATH` (MNIST's IDX format) and `npz:PATH` (numpy archives).

IDX (LeCun et al. 1998, http://yann.lecun.com/exdb/mnist/): a big-endian header of
two zero bytes, an element-type byte (0x08 = unsigned byte), a rank byte r and r
uint32 dimensions, then the elements in C order. Files may be gzipped.
"""

import gzip
import os
import struct
import zipfile
import zlib

import numpy as np

from dulx.data.dataset import Raw
from dulx.data.dataset import images
from dulx.data.dataset import one_line
from dulx.errors import DataError

__all__ = ['labels_path', 'read_idx', 'read_npz']

_UBYTE = 0x08
_GZIP_MAGIC = b'\x1f\x8b'


def _require_file(path: str) -> None:
  if not os.path.isfile(path):
    raise DataError(f'file {path!r} not found.' if not os.path.exists(path)
                    else f'{path!r} is not a file.')


def _read_bytes(path: str) -> bytes:
  """The file's bytes, gunzipped when they start with the gzip magic number."""
  _require_file(path)
  try:
    with open(path, 'rb') as f:
      data = f.read()
    return gzip.decompress(data) if data.startswith(_GZIP_MAGIC) else data
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f'cannot read {path}: {one_line(e)} (corrupt or truncated file?).') from None


def _parse_idx(data: bytes, path: str, rank: int) -> np.ndarray:
  """The uint8 array of shape [d_1, ..., d_rank] stored in an IDX file's bytes."""
  if len(data) < 4 or data[:2] != b'\0\0':
    raise DataError(f'{path} is not an IDX file: bad magic number {data[:4].hex() or "(empty)"}.')
  if data[2] != _UBYTE:
    raise DataError(f'{path}: IDX element type 0x{data[2]:02x} is not supported; dulx reads '
                    f'unsigned bytes (0x{_UBYTE:02x}).')
  if data[3] != rank:
    raise DataError(f'{path}: IDX array of rank {data[3]}, expected {rank} '
                    '(images [N, H, W], labels [N]).')
  header = 4 + 4 * rank
  if len(data) < header:
    raise DataError(f'{path}: IDX header truncated ({len(data)} of {header} bytes).')
  dims = struct.unpack(f'>{rank}I', data[4:header])
  size = int(np.prod(dims))
  if len(data) - header != size:
    raise DataError(f'{path}: {len(data) - header} bytes of data where the header '
                    f'{list(dims)} needs {size} (truncated or corrupt file).')
  return np.frombuffer(data, np.uint8, size, header).reshape(dims)


def labels_path(path: str) -> str | None:
  """The labels file beside an images file, or None.

  'images-idx3' in the file name becomes 'labels-idx1'; the gzipped and the plain
  name are both tried (t10k-images-idx3-ubyte.gz -> t10k-labels-idx1-ubyte[.gz]).
  """
  folder, name = os.path.split(path)
  if 'images-idx3' not in name:
    return None
  name = name.replace('images-idx3', 'labels-idx1')
  other = name[:-3] if name.endswith('.gz') else name + '.gz'
  for candidate in (name, other):
    candidate = os.path.join(folder, candidate)
    if os.path.isfile(candidate):
      return candidate
  return None


def read_idx(path: str) -> Raw:
  """An IDX images file (gzipped or not) and its labels file when one lies beside it.

  Returns:
    Raw with x uint8 [N, H, W, 1] (256 levels) and y uint8 [N] or None;
    num_classes = the largest label + 1.

  Raises:
    DataError: a missing, unreadable, corrupt or truncated file, a bad magic number,
      or a labels file whose length differs from the images'.
  """
  x = _parse_idx(_read_bytes(path), path, rank=3)
  y = None
  label_file = labels_path(path)
  if label_file is not None:
    y = _parse_idx(_read_bytes(label_file), label_file, rank=1)
  return images(x, y, path if y is None else f'{path} with {label_file}')


def read_npz(path: str) -> Raw:
  """A .npz archive with `x` uint8 [N, H, W] or [N, H, W, C] and optional `y` [N] integers.

  Raises:
    DataError: a missing or corrupt file, no `x`, or arrays of the wrong dtype, rank
      or length.
  """
  _require_file(path)
  try:
    archive = np.load(path, allow_pickle=False)
    if not isinstance(archive, np.lib.npyio.NpzFile):
      raise TypeError('it holds a single array, not an archive of named arrays')
    with archive:
      names = list(archive.files)
      arrays = {name: archive[name] for name in ('x', 'y') if name in names}
  except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile, zlib.error) as e:
    raise DataError(f'cannot read {path} as a .npz archive: {one_line(e)}.') from None
  if 'x' not in arrays:
    raise DataError(f'{path} has no array "x" (it holds: {", ".join(names) or "nothing"}).')
  return images(arrays['x'], arrays.get('y'), path)
