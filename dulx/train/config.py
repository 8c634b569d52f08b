"""The training configuration: one frozen dataclass, validated up front.

The experiment CLI fills it from flags; notebooks build it directly. It is saved as
JSON in the workdir, so `dulx.restore(workdir)` can rebuild the model without flags.
"""

import dataclasses
import json
import math
from typing import Any

from dulx.errors import ConfigError

__all__ = ['CHOICES', 'Config']

CHOICES = {
    'binarize': ('none', 'threshold', 'stochastic'),
    'optimizer': ('adam', 'adamw'),
    'lr_schedule': ('constant', 'cosine'),
    'dtype': ('float32', 'bfloat16'),
    'parallel': ('jit', 'pmap'),
}


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that defines a training run.

  `model_options` are the keyword options of the model's builder (see
  `dulx.models.build_model`); everything else is read by the harness.
  Step counts are global optimisation steps; `*_every` = 0 means "only at the end".
  """
  model: str
  model_options: dict[str, Any] = dataclasses.field(default_factory=dict)
  # Data.
  dataset: str = 'digits'
  train_split: str = 'train[:80%]'
  eval_split: str = 'train[80%:]'
  binarize: str = 'none'
  quantize: int = 0  # 0 = keep the data's levels.
  # Schedule.
  batch_size: int = 64
  eval_batch_size: int = 0  # 0 = batch_size.
  num_steps: int = 1000
  log_every: int = 50
  eval_every: int = 500
  checkpoint_every: int = 500
  sample_every: int = 0
  keep_checkpoints: int = 3
  num_samples: int = 64
  # Optimisation.
  optimizer: str = 'adam'
  learning_rate: float = 1e-3
  lr_schedule: str = 'constant'
  warmup_steps: int = 0
  weight_decay: float = 0.0
  grad_clip: float = 0.0  # Global-norm clipping; 0 = off.
  ema_decay: float = 0.0  # Parameter EMA for eval and sampling (decay warmed up: ema_decay_at); 0 = off.
  # Execution.
  seed: int = 0
  dtype: str = 'float32'
  parallel: str = 'jit'

  def __post_init__(self):
    self.validate()

  def validate(self) -> None:
    """Raises ConfigError (one line) on any value that cannot work."""
    for name, choices in CHOICES.items():
      if getattr(self, name) not in choices:
        raise ConfigError(f'--{name}={getattr(self, name)!r} is not one of {", ".join(choices)}.')
    for name in ('batch_size', 'num_steps', 'log_every', 'keep_checkpoints', 'num_samples'):
      if getattr(self, name) <= 0:
        raise ConfigError(f'--{name} must be positive, got {getattr(self, name)}.')
    for name in ('eval_batch_size', 'eval_every', 'checkpoint_every', 'sample_every',
                 'warmup_steps', 'quantize'):
      if getattr(self, name) < 0:
        raise ConfigError(f'--{name} must be >= 0, got {getattr(self, name)}.')
    if self.quantize == 1:
      raise ConfigError('--quantize must be 0 (off) or >= 2 levels, got 1.')
    if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
      raise ConfigError(f'--learning_rate must be a finite number > 0, got {self.learning_rate}.')
    for name in ('weight_decay', 'grad_clip'):
      if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
        raise ConfigError(f'--{name} must be a finite number >= 0, got {getattr(self, name)}.')
    if self.weight_decay and self.optimizer != 'adamw':
      raise ConfigError(f'--weight_decay={self.weight_decay} needs --optimizer=adamw '
                        f'(--optimizer={self.optimizer} has no weight decay).')
    if not 0.0 <= self.ema_decay < 1.0:
      raise ConfigError(f'--ema_decay must be in [0, 1), got {self.ema_decay}.')

  @property
  def eval_batch(self) -> int:
    return self.eval_batch_size or self.batch_size

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> 'Config':
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ConfigError(f'unknown config keys: {", ".join(unknown)}.')
    return cls(**d)

  def replace(self, **changes) -> 'Config':
    return dataclasses.replace(self, **changes)
