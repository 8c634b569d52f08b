"""tfds-style split strings: `train`, `train[:8000]`, `[8000:]`, `train[-1000:]`, `train[10%:20%]`.

A split names a base split of the source (empty = the default, `train`) and an
optional slice of it. Each bound is an example index or a percentage of the base
split's size, and may be negative (counted from the end). A percentage p of N
examples is the index floor(N * p / 100 + 1/2), so `[:80%]` and `[80%:]` (or
`[-20%:]`) partition the split exactly.
"""

import dataclasses
import re

from dulx.errors import DataError

__all__ = ['DEFAULT_SPLIT', 'Split', 'parse']

DEFAULT_SPLIT = 'train'

_BOUND = r'(-?\d+%?)?'
_PATTERN = re.compile(rf'([A-Za-z][\w.-]*)?(?:\[{_BOUND}:{_BOUND}\])?')


@dataclasses.dataclass(frozen=True)
class Split:
  """A parsed split: the base split's name and the two bounds as written ('' = open)."""
  name: str
  start: str = ''
  stop: str = ''

  def __str__(self) -> str:
    if not (self.start or self.stop):
      return self.name
    return f'{self.name}[{self.start}:{self.stop}]'

  def indices(self, n: int, where: str) -> tuple[int, int]:
    """The slice [start, stop) of a base split of n examples.

    Args:
      n: the size of the base split.
      where: names the dataset in error messages.

    Raises:
      DataError: a bound beyond the split (|index| > n or |percentage| > 100), or an
        empty slice.
    """
    start = _index(self.start, n, 0, self, where)
    stop = _index(self.stop, n, n, self, where)
    if start >= stop:
      raise DataError(f'{where} split {self} is empty: it selects [{start}:{stop}] of the '
                      f'{n} examples of {self.name!r}.')
    return start, stop


def _index(bound: str, n: int, default: int, split: Split, where: str) -> int:
  if not bound:
    return default
  percent = bound.endswith('%')
  value = int(bound.rstrip('%'))
  limit = 100 if percent else n
  if abs(value) > limit:
    raise DataError(f'{where} split {split}: bound {bound} is out of range for the {n} '
                    f'examples of {split.name!r} (allowed: -{limit}{"%" * percent} to '
                    f'{limit}{"%" * percent}).')
  if percent:
    value = (2 * value * n + 100) // 200  # floor(n * value / 100 + 1/2) in exact integers.
  return value + n if value < 0 else value


def parse(split: str) -> Split:
  """Parses a split string; the base name defaults to `train`.

  Raises:
    DataError: a string that is not NAME, NAME[A:B] or [A:B] with integer or
      percentage bounds.
  """
  match = _PATTERN.fullmatch(split) if isinstance(split, str) else None
  if not split or match is None:
    raise DataError(f'malformed split {split!r}: expected NAME, NAME[A:B] or [A:B] with A, B '
                    'integers or integer percentages, e.g. train, train[:80%], [-1000:].')
  name, start, stop = match.groups()
  return Split(name or DEFAULT_SPLIT, start or '', stop or '')
