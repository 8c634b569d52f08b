"""The embedded text source `text:NAME[:T[:S]]`: windows, alphabet, splits, bad specs."""

import chex
import numpy as np
import pytest

from dulx import data
from dulx.data import text
from dulx.errors import ConfigError, DataError


def test_windows_decode_to_the_corpus_in_order():
  train, test = data.load('text:alice', 'train'), data.load('text:alice', 'test')
  corpus = text.corpus('alice')
  symbols = train.info.alphabet
  cut = round(text.TRAIN_FRACTION * len(corpus))
  assert symbols == text.alphabet(corpus) == test.info.alphabet
  for ds, part in ((train, corpus[:cut]), (test, corpus[cut:])):
    n = len(part) // text.DEFAULT_LENGTH
    chex.assert_shape(ds.x, (n, text.DEFAULT_LENGTH))
    assert ds.x.dtype == np.int32 and ds.y is None
    assert ds.info.num_levels == len(symbols) and ds.info.num_classes is None
    assert ds.x.min() >= 0 and ds.x.max() < len(symbols)
    assert text.decode(ds.x, symbols) == part[:n * text.DEFAULT_LENGTH]
  assert train.info.shape == (64,) and train.info.spec == 'text:alice'


def test_characters_and_levels_round_trip():
  symbols = text.alphabet(text.corpus('alice'))
  assert list(symbols) == sorted(set(symbols)) and ' ' in symbols and '\n' not in symbols
  sentence = 'Alice was beginning to get very tired!'
  levels = text.encode(sentence, symbols)
  assert levels.dtype == np.int32 and levels.shape == (len(sentence),)
  assert text.decode(levels, symbols) == sentence
  np.testing.assert_array_equal(text.encode(symbols, symbols), np.arange(len(symbols)))
  with pytest.raises(ValueError, match='alphabet'):
    text.encode('\u00e9t\u00e9', symbols)


def test_splits_do_not_overlap_and_cover_the_text():
  corpus = text.corpus('alice')
  train, test = (data.load('text:alice:100', s) for s in ('train', 'test'))
  train_text, test_text = text.decode(train.x, train.info.alphabet), text.decode(test.x, test.info.alphabet)
  cut = round(text.TRAIN_FRACTION * len(corpus))
  assert corpus.startswith(train_text) and corpus[cut:].startswith(test_text)
  assert len(train_text) <= cut  # Train windows end before the test text begins.
  assert 0.85 < len(train.x) / (len(train.x) + len(test.x)) < 0.95


def test_window_length_and_slices():
  long = data.load('text:alice:128', 'train[:10]')
  chex.assert_shape(long.x, (10, 128))
  assert long.info.split == 'train[:10]'
  full = data.load('text:alice:128', 'train')
  np.testing.assert_array_equal(data.load('text:alice:128', 'train[-5:]').x, full.x[-5:])
  halves = [data.load('text:alice:128', s).x for s in ('train[:50%]', 'train[50%:]')]
  np.testing.assert_array_equal(np.concatenate(halves), full.x)


@pytest.mark.parametrize('stride', [1, 5, 16])
def test_strided_training_windows_start_every_s_characters(stride):
  corpus = text.corpus('alice')
  cut = round(text.TRAIN_FRACTION * len(corpus))
  train = data.load(f'text:alice:16:{stride}', 'train')
  chex.assert_shape(train.x, ((cut - 16) // stride + 1, 16))
  windows = [text.decode(w, train.info.alphabet) for w in train.x]
  assert windows == [corpus[i:i + 16] for i in range(0, cut - 15, stride)]
  # The test split stays cut into non-overlapping windows, whatever the stride.
  np.testing.assert_array_equal(data.load(f'text:alice:16:{stride}', 'test').x,
                                data.load('text:alice:16', 'test').x)
  if stride == 16:
    np.testing.assert_array_equal(train.x, data.load('text:alice:16', 'train').x)


def test_text_cannot_be_binarized():
  with pytest.raises(ConfigError, match='text'):
    data.preprocess(data.load('text:alice', 'test'), binarize='threshold')


@pytest.mark.parametrize('spec,split,match', [
    ('text:', 'train', 'missing its NAME'),
    ('text:moby', 'train', "unknown text 'moby'"),
    ('text:alice:0', 'train', 'positive integer'),
    ('text:alice:sixty', 'train', 'positive integer'),
    ('text:alice:64:0', 'train', 'stride S must be a positive integer'),
    ('text:alice:64:65', 'train', 'at most the window length'),
    ('text:alice:64:8:1', 'train', r'expected text:NAME\[:T\[:S\]\]'),
    ('text:alice:5000', 'test', 'do not fit'),
    ('text:alice', 'validation', "has no split 'validation'"),
    ('text:alice', 'test[:100]', 'out of range'),
])
def test_bad_specs_give_one_line(spec, split, match):
  with pytest.raises(DataError, match=match) as error:
    data.load(spec, split)
  assert '\n' not in str(error.value)
