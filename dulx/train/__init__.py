"""The one training harness: state, compiled step, fit loop, checkpoints."""

from dulx.train.checkpoint import Checkpoints
from dulx.train.config import Config
from dulx.train.loop import Interrupted
from dulx.train.loop import evaluate
from dulx.train.loop import load_data
from dulx.train.loop import restore
from dulx.train.loop import sample
from dulx.train.loop import train_and_evaluate
from dulx.train.state import TrainState
from dulx.train.step import JitRunner
from dulx.train.step import PmapRunner
from dulx.train.step import ema_decay_at
from dulx.train.step import likelihood_loss
from dulx.train.step import make_init_fn
from dulx.train.step import make_optimizer
from dulx.train.step import make_runner
from dulx.train.step import make_train_step
from dulx.train.writer import read_metrics

__all__ = [
    'Checkpoints', 'Config', 'Interrupted', 'JitRunner', 'PmapRunner', 'TrainState', 'ema_decay_at',
    'evaluate', 'likelihood_loss', 'load_data', 'make_init_fn', 'make_optimizer', 'make_runner', 'make_train_step',
    'read_metrics', 'restore', 'sample', 'train_and_evaluate',
]
