"""Binarization and quantization of a loaded dataset."""

import dataclasses

import numpy as np

from dulx.data.dataset import Dataset
from dulx.errors import ConfigError

__all__ = ['BINARIZE', 'preprocess']

BINARIZE = ('none', 'threshold', 'stochastic')


def _quantize(ds: Dataset, k: int) -> Dataset:
  """k levels: floor(x k / L) for L-level data; k equal bins per dim over the bounds otherwise."""
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
    raise ConfigError(f'quantize must be an integer >= 2 levels, got {k!r}.')
  info = ds.info
  if info.num_levels is not None:
    if k > info.num_levels:
      raise ConfigError(f'cannot quantize {info.spec} into {k} levels: it has only '
                        f'{info.num_levels}.')
    x = (ds.x * k // info.num_levels).astype(np.int32)
  elif info.bounds is not None:
    low, high = info.bounds
    bins = np.floor((ds.x.astype(np.float64) - low) * (k / (high - low)))
    x = np.clip(bins, 0, k - 1).astype(np.int32)
  else:
    raise ConfigError(f'cannot quantize {info.spec}: continuous data without bounds.')
  return dataclasses.replace(ds, x=x, info=dataclasses.replace(info, num_levels=k))


def _binarize(ds: Dataset, mode: str) -> Dataset:
  """Threshold: 1 where x / (L - 1) > 1/2; stochastic: x / (L - 1) as Bernoulli probabilities."""
  info = ds.info
  if info.num_levels is None:
    raise ConfigError(f'cannot binarize {info.spec}: its data are continuous.')
  top = info.num_levels - 1
  if mode == 'threshold':
    x = (2 * ds.x > top).astype(np.int32)  # x / (L - 1) > 1/2, in exact integers.
  else:
    x = (ds.x / top).astype(np.float32)
  return dataclasses.replace(ds, x=x, info=dataclasses.replace(info, num_levels=2),
                             stochastic_binarization=mode == 'stochastic')


def preprocess(ds: Dataset, *, binarize: str = 'none', quantize: int | None = None) -> Dataset:
  """Binarizes or quantizes `ds` (at most one of the two).

  Args:
    ds: a loaded dataset.
    binarize: 'none'; 'threshold' (fixed binarization: x / (L - 1) > 1/2 -> 1, else 0,
      int32, 2 levels); or 'stochastic' (dynamic binarization, Salakhutdinov & Murray
      2008, "On the quantitative analysis of deep belief networks"): x becomes float32
      probabilities p = x / (L - 1) and every batch draws x ~ Bernoulli(p) afresh
      (see Batcher); info.num_levels = 2.
    quantize: None, or k >= 2 levels: discrete data with L >= k levels become
      floor(x k / L); continuous data become k equal bins per dim over info.bounds
      (values outside are clipped to the end bins), int32, as 1-D/2-D histograms use.

  Returns:
    A new Dataset; `ds` is unchanged.

  Raises:
    ConfigError (one line): an unknown binarize mode, both options, binarizing
      continuous data, k < 2 or k > L, data already stochastically binarized, or text.
  """
  if binarize not in BINARIZE:
    raise ConfigError(f'binarize={binarize!r} is not one of {", ".join(BINARIZE)}.')
  if binarize == 'none' and quantize is None:
    return ds
  if binarize != 'none' and quantize is not None:
    raise ConfigError(f'binarize={binarize!r} and quantize={quantize} cannot be combined; '
                      'choose one.')
  if ds.stochastic_binarization:
    raise ConfigError(f'{ds.info.spec} is already stochastically binarized.')
  if ds.info.alphabet is not None:
    raise ConfigError(f'{ds.info.spec} is text: its levels are characters and cannot be '
                      'binarized or quantized.')
  return _quantize(ds, quantize) if quantize is not None else _binarize(ds, binarize)
