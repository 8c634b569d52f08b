"""Embedded English text as fixed-length character windows: `text:NAME` or `text:NAME:T`.

The corpus is a string shipped with dulx (no network); every run of whitespace in it
becomes one space. Its alphabet is the sorted set of its characters, and character
alphabet[i] is level i, so a window is a sequence of T levels in [0, len(alphabet)).
The base split 'train' is the first 90% of the characters and 'test' the rest; each
is cut into consecutive, non-overlapping windows of T characters (a tail shorter than
T is dropped), so no character is in both splits.

Corpora:
  alice   Chapters I-III of "Alice's Adventures in Wonderland" (Lewis Carroll, 1865;
          public domain): 31,262 characters, 61 symbols (dulx.data.alice).
"""

import numpy as np

from dulx.data import alice
from dulx.data.dataset import Raw
from dulx.errors import DataError

__all__ = ['CORPORA', 'DEFAULT_LENGTH', 'SPLITS', 'TRAIN_FRACTION', 'alphabet', 'corpus',
           'decode', 'encode', 'load']

CORPORA = {'alice': alice.TEXT}
DEFAULT_LENGTH = 64  # Characters per window when the spec names none.
TRAIN_FRACTION = 0.9
SPLITS = ('train', 'test')


def corpus(name: str) -> str:
  """The text of corpus `name` with every run of whitespace made one space."""
  if name not in CORPORA:
    raise DataError(f'unknown text {name!r}; known: {", ".join(CORPORA)}.')
  return ' '.join(CORPORA[name].split())


def alphabet(text: str) -> str:
  """The sorted distinct characters of `text`: character i is level i."""
  return ''.join(sorted(set(text)))


def encode(text: str, symbols: str) -> np.ndarray:
  """Characters -> int32 levels [len(text)] in [0, len(symbols)), level i = symbols[i]."""
  index = {c: i for i, c in enumerate(symbols)}
  missing = sorted(set(text) - set(index))
  if missing:
    raise ValueError(f'characters {"".join(missing)!r} are not in the alphabet.')
  return np.array([index[c] for c in text], np.int32)


def decode(levels: np.ndarray, symbols: str) -> str:
  """int levels [T] -> the string of their characters (the inverse of `encode`)."""
  return ''.join(symbols[i] for i in np.asarray(levels).reshape(-1))


def _parse(arg: str) -> tuple[str, int]:
  """'NAME' or 'NAME:T' -> (name, T)."""
  name, colon, length = arg.partition(':')
  if not colon:
    return name, DEFAULT_LENGTH
  if not length.isdigit() or int(length) < 1:
    raise DataError(f'text:{arg}: the window length after {name + ":"!r} must be a '
                    f'positive integer, got {length!r} (e.g. text:{name}:128).')
  return name, int(length)


def load(arg: str, split: str) -> Raw:
  """Base split `split` ('train' or 'test') of `text:<arg>` as windows.

  Args:
    arg: 'NAME' (windows of DEFAULT_LENGTH characters) or 'NAME:T'.
    split: 'train' (the first TRAIN_FRACTION of the text) or 'test' (the rest).

  Returns:
    Raw with x int32 [N, T] levels, no labels, num_levels = len(alphabet) and the
    alphabet (the whole corpus's, so both splits share it).

  Raises:
    DataError (one line): an unknown corpus, a malformed length, or windows longer
      than the split.
  """
  name, length = _parse(arg)
  text = corpus(name)
  symbols = alphabet(text)
  cut = round(TRAIN_FRACTION * len(text))
  part = text[:cut] if split == 'train' else text[cut:]
  num_windows = len(part) // length
  if num_windows == 0:
    raise DataError(f'text:{arg}: windows of {length} characters do not fit in the '
                    f'{len(part)} characters of split {split!r}.')
  x = encode(part[:num_windows * length], symbols).reshape(num_windows, length)
  return Raw(x, None, len(symbols), None, alphabet=symbols)
