"""Embedded English text as fixed-length character windows: `text:NAME[:T[:S]]`.

The corpus is a string shipped with dulx (no network); every run of whitespace in it
becomes one space. Its alphabet is the sorted set of its characters, and character
alphabet[i] is level i, so a window is a sequence of T levels in [0, len(alphabet)).
The base split 'train' is the first 90% of the characters and 'test' the rest, so no
character is in both splits. 'test' is cut into consecutive, non-overlapping windows of
T characters (64 by default; a tail shorter than T is dropped), so every test character
is scored once. 'train' windows start every S characters (S = T by default, the same
non-overlapping cut): S < T gives overlapping windows, every character seen at up to
T / S positions within a window (S = 1: a window at every offset), the usual char-RNN
augmentation of a small text. Slicing an overlapping 'train' split (`train[:90%]`)
leaves windows that share characters on both sides of the cut.

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


def _parse(arg: str) -> tuple[str, int, int | None]:
  """'NAME', 'NAME:T' or 'NAME:T:S' -> (name, T, S or None)."""
  name, _, rest = arg.partition(':')
  numbers = rest.split(':') if rest else []
  if len(numbers) > 2:
    raise DataError(f'text:{arg}: expected text:NAME[:T[:S]] (window length T, stride S '
                    f'of the training windows), e.g. text:{name}:64:8.')
  for what, value in zip(('window length T', 'stride S'), numbers):
    if not value.isdigit() or int(value) < 1:
      raise DataError(f'text:{arg}: the {what} must be a positive integer, got {value!r} '
                      f'(e.g. text:{name}:128 or text:{name}:64:8).')
  length = int(numbers[0]) if numbers else DEFAULT_LENGTH
  stride = int(numbers[1]) if len(numbers) == 2 else None
  if stride is not None and stride > length:
    raise DataError(f'text:{arg}: the stride S={stride} must be at most the window length '
                    f'T={length} (a larger one skips characters).')
  return name, length, stride


def load(arg: str, split: str) -> Raw:
  """Base split `split` ('train' or 'test') of `text:<arg>` as windows.

  Args:
    arg: 'NAME' (windows of DEFAULT_LENGTH characters), 'NAME:T', or 'NAME:T:S'
      (training windows start every S characters).
    split: 'train' (the first TRAIN_FRACTION of the text) or 'test' (the rest, always
      in non-overlapping windows).

  Returns:
    Raw with x int32 [N, T] levels, no labels, num_levels = len(alphabet) and the
    alphabet (the whole corpus's, so both splits share it).

  Raises:
    DataError (one line): an unknown corpus, a malformed length or stride, or windows
      longer than the split.
  """
  name, length, stride = _parse(arg)
  text = corpus(name)
  symbols = alphabet(text)
  cut = round(TRAIN_FRACTION * len(text))
  part = text[:cut] if split == 'train' else text[cut:]
  if len(part) < length:
    raise DataError(f'text:{arg}: windows of {length} characters do not fit in the '
                    f'{len(part)} characters of split {split!r}.')
  if split != 'train' or stride is None:
    stride = length
  levels = encode(part, symbols)
  x = np.lib.stride_tricks.sliding_window_view(levels, length)[::stride]
  return Raw(np.ascontiguousarray(x), None, len(symbols), None, alphabet=symbols)
