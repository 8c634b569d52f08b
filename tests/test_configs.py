"""Every flagfile in experiments/configs parses, validates and builds its model.

The *_mnist configs are sized for an accelerator and read ../shared, so no test trains
them; a misspelt flag or an impossible option there would otherwise first show up on a
GPU. Each flagfile is parsed by its script's own flags (`dulx.cli`), turned into the
run's Config, and its model is built for the data the config names (MNIST's shape and
levels stand in for its IDX files).
"""

import glob
import os
import re

from absl import flags
import pytest

from dulx import cli
from dulx import data
from dulx import models
from dulx import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, 'experiments', 'configs', '*.flags')))


def _model_of(path: str) -> str:
  """The script a flagfile is for, from its name: <model>_<data>.flags."""
  name = os.path.basename(path)[:-len('.flags')]
  matches = [m for m in models.names() if re.fullmatch(rf'{m}_[a-z0-9]+', name)]
  assert len(matches) == 1, f'{name}: no single model matches ({matches})'
  return matches[0]


def _info(config) -> data.DatasetInfo:
  """The DatasetInfo the run would build its model from."""
  if config.dataset.startswith('idx:'):  # MNIST: the IDX files live in ../shared, not here.
    levels = 2 if config.binarize != 'none' else (config.quantize or 256)
    return data.DatasetInfo(config.dataset, config.train_split, (28, 28, 1), levels, 10)
  return train.load_data(config, config.train_split).info


def test_every_script_has_configs():
  assert len(CONFIGS) >= 30
  scripts = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, 'experiments', '*.py'))}
  assert scripts == {_model_of(p) for p in CONFIGS}


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: os.path.basename(p))
def test_config_parses_validates_and_builds(path):
  model = _model_of(path)
  flag_values = flags.FlagValues()
  cli._define_flags(model, flag_values)  # pylint: disable=protected-access
  flag_values(['prog', f'--flagfile={path}'])  # Unknown flags and bad values raise here.
  config = cli._config(model, flag_values)  # pylint: disable=protected-access
  assert flag_values['workdir'].present, 'a config names its own --workdir'
  assert flag_values['workdir'].value == f'/tmp/dulx/{os.path.basename(path)[:-6]}'
  info = _info(config)
  models.build_model(model, info, config.model_options)  # Impossible options raise here.
  for every in ('eval_every', 'checkpoint_every', 'sample_every', 'log_every'):
    assert getattr(config, every) <= config.num_steps, f'--{every} beyond --num_steps'
