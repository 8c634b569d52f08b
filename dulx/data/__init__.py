"""Datasets and input pipelines.

    ds = dulx.data.load('digits', 'train[:80%]')  # x int32 [1438, 8, 8, 1], 17 levels, y int32
    ds = dulx.data.preprocess(ds, binarize='stochastic')  # dynamic binarization, 2 levels
    batcher = dulx.data.Batcher(ds, 64, seed=0)
    batch = batcher(step)  # {'x': [64, 8, 8, 1] int32 in {0, 1}, 'y': [64] int32}
    for batch, valid in dulx.data.eval_batches(ds, 256):  # all of ds; the last batch padded
      ...

Specs: 'digits', 'toy2d:NAME', 'toy1d:NAME', 'idx:PATH', 'npz:PATH', 'tfds:NAME'
(see dulx.data.sources); splits are tfds-style (see dulx.data.splits).
"""

from dulx.data.dataset import Dataset
from dulx.data.dataset import DatasetInfo
from dulx.data.pipeline import Batcher
from dulx.data.pipeline import eval_batches
from dulx.data.preprocess import preprocess
from dulx.data.sources import SPEC_PREFIXES
from dulx.data.sources import load

__all__ = ['load', 'preprocess', 'Batcher', 'eval_batches', 'Dataset', 'DatasetInfo',
           'SPEC_PREFIXES']
