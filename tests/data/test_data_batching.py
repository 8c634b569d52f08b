"""Batcher and eval_batches: batches are a pure function of (seed, step)."""

import chex
import numpy as np
import pytest

from dulx import data
from dulx.errors import ConfigError

N = 103  # Not a multiple of the batch sizes below: the remainder is dropped.


def _indexed(n: int = N, levels: int = 5) -> data.Dataset:
  """x [n, 2, 3, 1] levels and y = the example's index: batches reveal which examples they hold."""
  rng = np.random.default_rng(0)
  x = rng.integers(0, levels, (n, 2, 3, 1)).astype(np.int32)
  info = data.DatasetInfo('fake', 'train', (2, 3, 1), levels, n)
  return data.Dataset(x, np.arange(n, dtype=np.int32), info)


def _assert_batches_equal(a: dict, b: dict):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
    assert a[key].dtype == b[key].dtype


def test_batch_shapes_and_contents():
  ds = _indexed()
  batcher = data.Batcher(ds, 10, seed=3)
  assert batcher.steps_per_epoch == 10
  batch = batcher(0)
  chex.assert_shape(batch['x'], (10, 2, 3, 1))
  chex.assert_shape(batch['y'], (10,))
  assert batch['x'].dtype == np.int32 and batch['y'].dtype == np.int32
  np.testing.assert_array_equal(batch['x'], ds.x[batch['y']])  # Rows stay with their labels.


def test_order_is_the_documented_permutation():
  batcher = data.Batcher(_indexed(), 10, seed=3)
  for step in (0, 9, 10, 25):
    epoch, position = divmod(step, 10)
    order = np.random.default_rng([3, epoch]).permutation(N)
    np.testing.assert_array_equal(batcher(step)['y'], order[10 * position:10 * position + 10])


def test_same_seed_and_step_same_batch():
  ds = data.preprocess(_indexed(), binarize='stochastic')
  a, b = data.Batcher(ds, 16, seed=7), data.Batcher(ds, 16, seed=7)
  for step in (0, 5, 6, 100, 5):  # Any order of calls: no state carries over.
    _assert_batches_equal(a(step), b(step))
  assert not np.array_equal(a(0)['y'], data.Batcher(ds, 16, seed=8)(0)['y'])


@pytest.mark.parametrize('batch_size', [1, 10, 16, N])
def test_every_example_once_per_epoch(batch_size):
  batcher = data.Batcher(_indexed(), batch_size, seed=1)
  steps = batcher.steps_per_epoch
  assert steps == N // batch_size
  for epoch in (0, 1):
    seen = np.concatenate([batcher(epoch * steps + i)['y'] for i in range(steps)])
    assert len(seen) == steps * batch_size
    assert len(np.unique(seen)) == len(seen)  # No example twice in an epoch.
    dropped = np.setdiff1d(np.arange(N), seen)
    assert len(dropped) == N % batch_size


def test_epochs_differ():
  batcher = data.Batcher(_indexed(), 10, seed=0)
  epochs = [np.concatenate([batcher(e * 10 + i)['y'] for i in range(10)]) for e in range(3)]
  assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])


def test_no_shuffle_is_dataset_order_every_epoch():
  batcher = data.Batcher(_indexed(), 10, seed=0, shuffle=False)
  for epoch in (0, 1):
    seen = np.concatenate([batcher(epoch * 10 + i)['y'] for i in range(10)])
    np.testing.assert_array_equal(seen, np.arange(100))


def test_resume_gives_the_same_batches():
  ds = data.preprocess(_indexed(), binarize='stochastic')
  uninterrupted = data.Batcher(ds, 8, seed=5)
  straight = [uninterrupted(s) for s in range(40)]
  resumed = data.Batcher(ds, 8, seed=5)  # A new process, resuming at step 17.
  for s in range(17, 40):
    _assert_batches_equal(resumed(s), straight[s])


def test_stochastic_binarization_marginals():
  """Over many steps, the mean of the bits drawn for probability p is p within 5 sigma."""
  levels = 11
  x = np.tile(np.arange(levels, dtype=np.int32), 40)[:, None]  # [440, 1]: each level 40 times.
  info = data.DatasetInfo('fake', 'train', (1,), levels, None)
  ds = data.preprocess(data.Dataset(x, None, info), binarize='stochastic')
  batcher = data.Batcher(ds, len(x), seed=0, shuffle=False)  # Every batch: all of x, in order.
  draws = np.stack([batcher(step)['x'][:, 0] for step in range(200)])  # [200, 440]
  assert draws.dtype == np.int32 and set(np.unique(draws)) == {0, 1}
  assert not np.array_equal(draws[0], draws[1])  # Drawn afresh at every step.
  for level in range(levels):
    p = level / (levels - 1)
    bits = draws[:, x[:, 0] == level]  # 8000 draws per level.
    if p in (0.0, 1.0):
      assert np.all(bits == p)
    else:
      assert abs(bits.mean() - p) < 5 * np.sqrt(p * (1 - p) / bits.size)


def test_dequantize():
  ds = _indexed(levels=5)
  batcher = data.Batcher(ds, 50, seed=2, dequantize=True)
  batch = batcher(3)
  assert batch['x'].dtype == np.float32
  assert batch['x'].min() >= 0.0 and batch['x'].max() < 1.0
  np.testing.assert_array_equal(np.floor(batch['x'] * 5).astype(np.int32), ds.x[batch['y']])
  noise = np.concatenate([(batcher(s)['x'] * 5 - ds.x[batcher(s)['y']]).ravel() for s in range(40)])
  assert abs(noise.mean() - 0.5) < 5 * np.sqrt(1 / 12 / len(noise))  # u ~ U[0, 1).
  _assert_batches_equal(batch, data.Batcher(ds, 50, seed=2, dequantize=True)(3))


def test_dequantize_top_level_stays_below_one():
  """(255 + u) / 256 rounds to 1.0 in float32 for u >= 1 - 2^-17: ~30 of these 4M draws."""
  info = data.DatasetInfo('fake', 'train', (1_000_000,), 256, None)
  ds = data.Dataset(np.full((4, 1_000_000), 255, np.int32), None, info)
  batch = data.Batcher(ds, 4, seed=0, dequantize=True)(0)
  assert batch['x'].min() >= 255 / 256 and batch['x'].max() < 1.0


def test_continuous_data_passes_through():
  ds = data.load('toy2d:rings', 'test[:100]')
  batch = data.Batcher(ds, 20, seed=0, shuffle=False)(1)
  assert batch.keys() == {'x'} and batch['x'].dtype == np.float32
  np.testing.assert_array_equal(batch['x'], ds.x[20:40])
  with pytest.raises(ConfigError, match='already continuous'):
    data.Batcher(ds, 20, seed=0, dequantize=True)


@pytest.mark.parametrize('batch_size', [0, -3, N + 1])
def test_bad_batch_size(batch_size):
  with pytest.raises(ConfigError) as e:
    data.Batcher(_indexed(), batch_size, seed=0)
  message = str(e.value)
  assert '\n' not in message
  assert f'batch size {batch_size}' in message and f'{N} examples' in message


def test_negative_seed():
  with pytest.raises(ConfigError, match='seed must be >= 0'):
    data.Batcher(_indexed(), 4, seed=-1)
  with pytest.raises(ConfigError, match='seed must be >= 0'):
    data.eval_batches(_indexed(), 4, seed=-1)


@pytest.mark.parametrize('batch_size', [1, 10, 25, N, 150])
def test_eval_batches_cover_everything_once(batch_size):
  ds = _indexed()
  batches = list(data.eval_batches(ds, batch_size))
  assert len(batches) == -(-N // batch_size)
  for batch, valid in batches:
    chex.assert_shape(batch['x'], (batch_size, 2, 3, 1))
    chex.assert_shape(batch['y'], (batch_size,))
  valid_counts = [valid for _, valid in batches]
  assert valid_counts == [batch_size] * (len(batches) - 1) + [N - batch_size * (len(batches) - 1)]
  real = np.concatenate([batch['y'][:valid] for batch, valid in batches])
  np.testing.assert_array_equal(real, np.arange(N))  # In order, each once.
  last, valid = batches[-1]
  assert np.all(last['y'][valid:] == N - 1)  # Padding repeats the last example.
  padding = last['x'][valid:]
  np.testing.assert_array_equal(padding, np.broadcast_to(ds.x[-1], padding.shape))


def test_eval_batches_stochastic_are_repeatable():
  ds = data.preprocess(data.load('digits', 'train[:300]'), binarize='stochastic')
  first = list(data.eval_batches(ds, 64, seed=1))
  again = list(data.eval_batches(ds, 64, seed=1))
  for (a, valid_a), (b, valid_b) in zip(first, again):
    assert valid_a == valid_b
    _assert_batches_equal(a, b)
  assert set(np.unique(first[0][0]['x'])) == {0, 1}
  other = next(data.eval_batches(ds, 64, seed=2))[0]
  assert not np.array_equal(first[0][0]['x'], other['x'])


@pytest.mark.parametrize('dequantize', [False, True])
def test_eval_data_do_not_depend_on_the_batch_size(dequantize):
  ds = data.preprocess(data.load('digits', 'train[:103]'), binarize='stochastic')
  def real_rows(batch_size):
    batches = list(data.eval_batches(ds, batch_size, seed=5, dequantize=dequantize))
    return {k: np.concatenate([b[k][:valid] for b, valid in batches]) for k in batches[0][0]}
  reference = real_rows(32)
  for batch_size in (1, 7, 33, 64, 103, 150):  # One device or eight, any --batch_size.
    _assert_batches_equal(real_rows(batch_size), reference)
  # The documented draw: examples [0, 32) binarized from default_rng([seed, 0, 2]).
  p = ds.x[:32]
  expected = (np.random.default_rng([5, 0, 2]).random(p.shape, dtype=np.float32) < p)
  if not dequantize:
    np.testing.assert_array_equal(reference['x'][:32], expected.astype(np.int32))
  else:
    np.testing.assert_array_equal(np.floor(reference['x'][:32] * 2), expected)


def test_eval_batches_bad_size():
  with pytest.raises(ConfigError, match='eval batch size must be >= 1, got 0'):
    data.eval_batches(_indexed(), 0)  # Raised at the call, before any batch is drawn.
