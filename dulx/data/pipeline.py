"""Batches whose content is a pure function of (seed, step), so resumed runs repeat exactly.

Training (`Batcher`): epoch e = step // steps_per_epoch visits the examples in the
order np.random.default_rng([seed, e]).permutation(N), in batches of batch_size; the
last N mod batch_size examples of the order are dropped. The randomness inside a
batch (dynamic binarization, dequantization noise) comes from its own stream,
np.random.default_rng([seed, step, 1]), so no state carries from step to step.

Evaluation (`eval_batches`): the whole dataset in order. Its randomness is drawn in
blocks of 32 examples, block k (examples [32k, 32k + 32)) from
np.random.default_rng([seed, k, 2]), whatever the batch size: every evaluation with
the same seed sees the same data, on any number of devices and at any batch size.
"""

from collections.abc import Iterator

import numpy as np

from dulx.data.dataset import Dataset
from dulx.errors import ConfigError

__all__ = ['Batcher', 'eval_batches']

_TRAIN_STREAM = 1  # Tags that keep the per-batch streams apart from the permutations.
_EVAL_STREAM = 2
_EVAL_BLOCK = 32  # Examples per block of evaluation randomness.
_BELOW_ONE = np.nextafter(np.float32(1), np.float32(0))


def _check(ds: Dataset, seed: int, dequantize: bool) -> None:
  if seed < 0:
    raise ConfigError(f'the data seed must be >= 0, got {seed}.')
  if dequantize and ds.info.num_levels is None:
    raise ConfigError(f'cannot dequantize {ds.info.spec}: its data are already continuous.')


def _batch(ds: Dataset, index: np.ndarray, rng: np.random.Generator,
           dequantize: bool) -> dict[str, np.ndarray]:
  """The examples `index` of `ds` as model inputs.

  Returns:
    {'x': [B, *shape], 'y': [B] int32 (when labelled)}. x is int32 levels in
    [0, L); with stochastic binarization, b ~ Bernoulli(p) drawn from `rng`; with
    `dequantize`, float32 (x + u) / L, u ~ U[0, 1) per dim from `rng`, in [0, 1)
    (Uria et al. 2013, "RNADE"; Theis et al. 2016, "A note on the evaluation of
    generative models"); float32 as stored for continuous data.
  """
  x = ds.x[index]
  if ds.stochastic_binarization:
    x = (rng.random(x.shape, dtype=np.float32) < x).astype(np.int32)
  if dequantize:
    noise = rng.random(x.shape, dtype=np.float32)
    x = np.minimum((x.astype(np.float32) + noise) / np.float32(ds.info.num_levels), _BELOW_ONE)
  batch = {'x': x}
  if ds.y is not None:
    batch['y'] = ds.y[index]
  return batch


class Batcher:
  """Training batches: `batcher(step)` is a pure function of (seed, step).

  Args:
    ds: the training set.
    batch_size: examples per batch, 1 <= batch_size <= N.
    seed: the data seed (>= 0): with the step, it fixes every batch.
    shuffle: a fresh permutation every epoch; False: dataset order every epoch.
    dequantize: float32 (x + u) / L instead of int32 levels (for flows).

  Attributes:
    steps_per_epoch: N // batch_size.

  Raises:
    ConfigError (one line): batch_size out of [1, N], a negative seed, dequantize on
      continuous data.
  """

  def __init__(self, ds: Dataset, batch_size: int, *, seed: int, shuffle: bool = True,
               dequantize: bool = False):
    n = len(ds.x)
    if not 0 < batch_size <= n:
      raise ConfigError(f'batch size {batch_size} does not fit the {n} examples of '
                        f'{ds.info.spec} {ds.info.split}: it must be in [1, {n}].')
    _check(ds, seed, dequantize)
    self.ds = ds
    self.batch_size = batch_size
    self.seed = seed
    self.shuffle = shuffle
    self.dequantize = dequantize
    self.steps_per_epoch = n // batch_size
    self._epoch, self._order = None, None  # The last epoch's order, kept for the next step.

  def order(self, epoch: int) -> np.ndarray:
    """[N] int: the example indices in the order epoch `epoch` visits them."""
    if epoch != self._epoch:
      n = len(self.ds.x)
      self._order = (np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle
                     else np.arange(n))
      self._epoch = epoch
    return self._order

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    """The batch of global step `step` >= 0: {'x': [B, *shape], 'y': [B] int32 (labelled data)}."""
    if step < 0:
      raise ValueError(f'step must be >= 0, got {step}.')
    epoch, position = divmod(step, self.steps_per_epoch)
    start = position * self.batch_size
    index = self.order(epoch)[start:start + self.batch_size]
    rng = np.random.default_rng([self.seed, step, _TRAIN_STREAM])
    return _batch(self.ds, index, rng, self.dequantize)


def eval_batches(ds: Dataset, batch_size: int, *, seed: int = 0,
                 dequantize: bool = False) -> Iterator[tuple[dict[str, np.ndarray], int]]:
  """The whole dataset in order, in batches of exactly `batch_size`.

  The last batch is padded by repeating the last example, so a compiled step sees one
  shape; the count of real examples says how much of each batch to score. The real
  rows do not depend on `batch_size` (see the module docstring).

  Args:
    ds: the evaluation set.
    batch_size: >= 1 (may exceed N: then one padded batch).
    seed: >= 0; fixes the stochastic binarization / dequantization of every example,
      so repeated evaluations see the same data.
    dequantize: as in Batcher.

  Yields:
    (batch, valid): batch as from Batcher; the first `valid` rows are real examples.

  Raises:
    ConfigError (one line), at the call: batch_size < 1, a negative seed, dequantize on
      continuous data.
  """
  if batch_size < 1:
    raise ConfigError(f'eval batch size must be >= 1, got {batch_size}.')
  _check(ds, seed, dequantize)
  n = len(ds.x)

  drawn = {}  # The last block drawn: a batch may start inside it.

  def block(k: int) -> dict[str, np.ndarray]:
    if k not in drawn:
      # Rows past the end repeat the last example: the last block is always whole.
      index = np.minimum(np.arange(k * _EVAL_BLOCK, (k + 1) * _EVAL_BLOCK), n - 1)
      drawn.clear()
      drawn[k] = _batch(ds, index, np.random.default_rng([seed, k, _EVAL_STREAM]), dequantize)
    return drawn[k]

  def batches():
    for start in range(0, n, batch_size):
      valid = min(batch_size, n - start)
      first, last = start // _EVAL_BLOCK, (start + valid - 1) // _EVAL_BLOCK
      blocks = [block(k) for k in range(first, last + 1)]
      offset = start - first * _EVAL_BLOCK
      batch = {}
      for key in blocks[0]:
        rows = np.concatenate([b[key] for b in blocks])[offset:offset + valid]
        batch[key] = np.concatenate([rows, np.repeat(rows[-1:], batch_size - valid, axis=0)])
      yield batch, valid
  return batches()
