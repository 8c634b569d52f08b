"""tfds-style split strings: parsing, slicing and every kind of bad split."""

import pytest

from dulx.data import splits
from dulx.errors import DataError


@pytest.mark.parametrize('text, name, start, stop', [
    ('train', 'train', '', ''),
    ('test', 'test', '', ''),
    ('train[:8000]', 'train', '', '8000'),
    ('[8000:]', 'train', '8000', ''),
    ('train[-1000:]', 'train', '-1000', ''),
    ('train[:80%]', 'train', '', '80%'),
    ('train[10%:20%]', 'train', '10%', '20%'),
    ('validation[5:-5]', 'validation', '5', '-5'),
    ('[:]', 'train', '', ''),
])
def test_parse_valid(text, name, start, stop):
  assert splits.parse(text) == splits.Split(name, start, stop)


@pytest.mark.parametrize('text, canonical', [
    ('[8000:]', 'train[8000:]'), ('train', 'train'), ('[:]', 'train'), ('test[1:2]', 'test[1:2]')])
def test_str_fills_in_the_base_name(text, canonical):
  assert str(splits.parse(text)) == canonical


@pytest.mark.parametrize('text', [
    '', 'train[', 'train[:10', 'train]', 'train[]', 'train[5]', 'train[::2]', 'train[a:b]',
    'train[1.5:]', 'train[:12.5%]', 'train[%:]', 'train[1:2]x', 'train [1:2]', '[1:2][3:4]',
    'train+test', '9train', None])
def test_parse_malformed(text):
  with pytest.raises(DataError, match='malformed split'):
    splits.parse(text)


@pytest.mark.parametrize('text, n, expected', [
    ('train', 10000, (0, 10000)),
    ('train[:8000]', 10000, (0, 8000)),
    ('[8000:]', 10000, (8000, 10000)),
    ('train[-1000:]', 10000, (9000, 10000)),
    ('train[:-1000]', 10000, (0, 9000)),
    ('train[:80%]', 10000, (0, 8000)),
    ('train[10%:20%]', 10000, (1000, 2000)),
    ('train[:10000]', 10000, (0, 10000)),
    ('train[-10000:]', 10000, (0, 10000)),
    ('train[-100%:100%]', 7, (0, 7)),
    ('train[:50%]', 5, (0, 3)),  # 2.5 rounds half up.
    ('train[10:20%]', 1000, (10, 200)),
])
def test_indices(text, n, expected):
  assert splits.parse(text).indices(n, 'ds') == expected


@pytest.mark.parametrize('n', [1797, 1000, 37, 7])
@pytest.mark.parametrize('p', [20, 33, 50, 80])
def test_percent_splits_partition_exactly(n, p):
  """[:p%] ends where [p%:] and [-(100-p)%:] start: the parts cover the split once."""
  _, head_stop = splits.parse(f'train[:{p}%]').indices(n, 'ds')
  tail = splits.parse(f'train[{p}%:]').indices(n, 'ds')
  assert tail == (head_stop, n)
  assert splits.parse(f'train[-{100 - p}%:]').indices(n, 'ds') == tail


@pytest.mark.parametrize('text, n, match', [
    ('train[:20000]', 10000, 'bound 20000 is out of range for the 10000 examples'),
    ('train[-10001:]', 10000, 'out of range'),
    ('train[:101%]', 10000, 'bound 101% is out of range'),
    ('train[-101%:]', 10000, 'out of range'),
    ('train[5:5]', 10000, 'is empty'),
    ('train[20:10]', 10000, 'is empty'),
    ('train[-1:-2]', 10000, 'is empty'),
    ('train[:0]', 10000, 'is empty'),
    ('train[:1%]', 10, 'is empty'),
    ('train[50%:50%]', 10000, 'is empty'),
])
def test_bad_indices(text, n, match):
  with pytest.raises(DataError, match=match) as e:
    splits.parse(text).indices(n, 'somedata')
  message = str(e.value)
  assert '\n' not in message and 'somedata' in message
