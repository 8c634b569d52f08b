"""The fit loop: `train_and_evaluate(config, workdir)`, plus evaluate/sample/restore.

The loop owns evaluation, logging, sample grids, checkpoints (resume from the latest
automatically), the progress bar and the NaN guard; models own none of it.

A workdir holds:
  config.json        the Config and the data's shape/levels/classes (for `restore`)
  flags.txt          the command line's flags, as a flagfile (from the CLI)
  checkpoints/<step> Orbax checkpoints of the TrainState (the last `keep_checkpoints`)
  metrics.jsonl      one JSON object per logged step, eval metrics prefixed `eval/`
  tensorboard/       TensorBoard events of the same metrics
  samples/           PNG sample grids (and .npy arrays in --mode=sample); for 1-D and
                     2-D continuous data also the learned density on a grid
                     (`*_density.png`) and, for flows, the eval points pushed
                     through the flow onto its base density (`*_latent.png`)
  .lock              empty; the running training holds a `flock` on it

Every check that can fail on bad input (data, options, workdir, checkpoint) runs
before the first byte is written, so a failed start leaves a workdir as it was
(give or take an empty `.lock`).
"""

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import signal
import sys
import tempfile
import time
from typing import Any

from absl import logging
import flax
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import numpy as np
import tqdm

from dulx import data as dulx_data
from dulx import models
from dulx import objectives
from dulx import sampling
from dulx import viz
from dulx.eval import importance
from dulx.errors import CheckpointError, ConfigError, DataError, DivergedError
from dulx.train import step as step_lib
from dulx.train.checkpoint import Checkpoints
from dulx.train.config import Config
from dulx.train.state import TrainState
from dulx.train.writer import MetricWriter, read_metrics

try:
  import fcntl
except ImportError:  # Windows has no flock: a workdir goes unguarded there.
  fcntl = None

__all__ = ['Interrupted', 'train_and_evaluate', 'evaluate', 'sample', 'restore', 'evaluate_dataset',
           'load_data']

_CONFIG_FILE = 'config.json'
_CHECKPOINTS = 'checkpoints'
_LOCK_FILE = '.lock'


class Interrupted(Exception):
  """Training stopped on SIGINT/SIGTERM after saving a checkpoint."""

  def __init__(self, signum: int, step: int):
    super().__init__(f'interrupted by signal {signum} at step {step}; checkpoint saved.')
    self.signum = signum
    self.step = step


def _dtype(config: Config):
  return jnp.bfloat16 if config.dtype == 'bfloat16' else jnp.float32


def load_data(config: Config, split: str, dataset: str | None = None) -> dulx_data.Dataset:
  """`split` of `dataset` (default: the run's) preprocessed as `config` trains on it."""
  ds = dulx_data.load(dataset or config.dataset, split)
  return dulx_data.preprocess(ds, binarize=config.binarize, quantize=config.quantize or None)


def _info_key(info: dulx_data.DatasetInfo) -> tuple:
  """What a model's shape depends on: data shape, levels, classes."""
  return tuple(info.shape), info.num_levels, info.num_classes


def _all_options(config: Config) -> dict[str, Any]:
  """The model's options, those left out at their builder's defaults, as JSON keeps them."""
  return json.loads(json.dumps({**models.model_options(config.model), **config.model_options}))


# Settings that change what a checkpoint holds beyond the model, each by what it keys on:
# adamw's chain holds one more state than adam's, clipping is one more link, and the
# EMA is a second copy of the parameters. Other settings (learning rate, schedule,
# clipping norm, decay values) may change between a run and its resume.
_STATE_LAYOUT = {
    'optimizer': lambda c: c.optimizer,
    'grad_clip': lambda c: c.grad_clip > 0,
    'ema_decay': lambda c: c.ema_decay > 0,
}


def _check_resumable(old: Config, old_info: dulx_data.DatasetInfo, new: Config,
                     info: dulx_data.DatasetInfo, workdir: str) -> None:
  """Raises CheckpointError unless `new` on `info` can resume what `old` on `old_info` wrote
  and the workdir's metrics.jsonl can be appended to."""
  if old.model != new.model:
    raise CheckpointError(f'{workdir} was trained with model {old.model!r}, not {new.model!r}; '
                          'use another --workdir.')
  # A run saved before its model gained an option holds the option's default.
  saved, given = _all_options(old), _all_options(new)
  changed = sorted(n for n in saved.keys() | given.keys() if saved.get(n) != given.get(n))
  if changed:
    values = '; '.join(f'--{n}={saved.get(n)} there, {given.get(n)} here' for n in changed)
    raise CheckpointError(f'{workdir} was trained with other model options ({values}); '
                          'use another --workdir.')
  if _info_key(old_info) != _info_key(info):
    raise CheckpointError(f'{workdir} was trained on data of shape, levels and classes '
                          f'{_info_key(old_info)}, not {_info_key(info)}; use another --workdir.')
  changed = [name for name, key in _STATE_LAYOUT.items() if key(old) != key(new)]
  if changed:
    was = ' '.join(f'--{name}={getattr(old, name)}' for name in changed)
    now = ' '.join(f'--{name}={getattr(new, name)}' for name in changed)
    raise CheckpointError(f'{workdir} was trained with {was}, and its checkpoints hold no state '
                          f'for {now} (the optimiser, clipping on/off and EMA on/off shape it); '
                          f'resume with {was} or use another --workdir.')
  read_metrics(os.path.join(workdir, 'metrics.jsonl'))  # Raises for a line that is not a record.


def _check_fits(info: dulx_data.DatasetInfo, trained: dulx_data.DatasetInfo, workdir: str) -> None:
  if (tuple(info.shape), info.num_levels) != (tuple(trained.shape), trained.num_levels):
    raise DataError(
        f'{info.spec} {info.split} gives examples of shape {tuple(info.shape)} with '
        f'{info.num_levels} levels, but the model in {workdir} was trained on shape '
        f'{tuple(trained.shape)} with {trained.num_levels} levels.')


def _fitting_data(setup: '_Setup', dataset: str | None, split: str | None,
                  workdir: str) -> dulx_data.Dataset:
  """`split` of `dataset` (defaults: the run's eval split and dataset), preprocessed as the
  run trains, refused (DataError) unless it has the trained shape and levels."""
  ds = load_data(setup.config, split or setup.config.eval_split, dataset)
  _check_fits(ds.info, setup.info, workdir)
  return ds


def _example_batch(info: dulx_data.DatasetInfo, size: int = 1) -> dict[str, np.ndarray]:
  dtype = np.int32 if info.num_levels else np.float32
  batch = {'x': np.zeros((size, *info.shape), dtype)}
  if info.num_classes:
    batch['y'] = np.zeros((size,), np.int32)
  return batch


def _read_run(workdir: str) -> tuple[Config, dulx_data.DatasetInfo] | None:
  """The config and data info saved in a workdir, or None for a fresh workdir."""
  path = os.path.join(workdir, _CONFIG_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      saved = json.load(f)
    info = saved['data']
    info = dulx_data.DatasetInfo(**{**info, 'shape': tuple(info['shape']),
                                    'bounds': tuple(info['bounds']) if info.get('bounds') else None})
    return Config.from_dict(saved['config']), info
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise CheckpointError(f'cannot read {path}: {e}') from None


def _write_run(workdir: str, config: Config, info: dulx_data.DatasetInfo) -> None:
  path = os.path.join(workdir, _CONFIG_FILE)
  with open(path + '.tmp', 'w') as f:
    json.dump({'config': dataclasses.asdict(config), 'data': dataclasses.asdict(info)}, f,
              indent=2, sort_keys=True)
  os.replace(path + '.tmp', path)


def _check_workdir_writable(workdir: str) -> None:
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise CheckpointError(f'workdir {workdir} exists and is not a directory.')
  parent = workdir
  while not os.path.exists(parent):
    parent = os.path.dirname(parent) or '.'
  if not os.path.isdir(parent):
    raise CheckpointError(f'cannot create workdir {workdir}: {parent} is not a directory.')
  try:
    with tempfile.TemporaryFile(dir=parent):
      pass
  except OSError as e:
    raise CheckpointError(f'workdir {workdir} is not writable: {e.strerror}.') from None


@contextlib.contextmanager
def _hold_workdir(workdir: str):
  """Holds `workdir` for one training run; a second run there fails while it does.

  The lock (`flock` on the empty file `<workdir>/.lock`) goes with the process, so
  a killed run leaves nothing stale behind. With several processes
  (`jax.distributed`) process 0 holds it for all of them and tells the others
  whether it got it, so a second run stops in every process. On a filesystem
  without locks (some network and FUSE mounts) the run goes on unguarded, with a
  warning; on Windows, without flock, unguarded.
  """
  fd, held = None, True
  if jax.process_index() == 0 and fcntl is not None:
    fd = os.open(os.path.join(workdir, _LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      held = False
    except OSError as e:
      logging.warning('cannot lock %s (%s); nothing stops a second training there.', workdir,
                      e.strerror)
  try:
    if jax.process_count() > 1:
      held = bool(multihost_utils.broadcast_one_to_all(np.int32(held)))
    if not held:
      raise CheckpointError(f'workdir {workdir} is in use by another training run; let it finish '
                            'or stop it, or choose another --workdir.')
    yield
  finally:
    if fd is not None:
      os.close(fd)  # Closing releases the lock.


@dataclasses.dataclass
class _Setup:
  """Everything built from a config before training or evaluation starts."""
  config: Config
  info: dulx_data.DatasetInfo
  model: flax.linen.Module
  tx: Any
  schedule: Any
  runner: step_lib.JitRunner
  init_fn: Any

  @property
  def num_dims(self) -> int:
    return math.prod(self.info.shape)

  def abstract_state(self) -> TrainState:
    return self.runner.abstract_state(self.init_fn, jax.random.PRNGKey(0), _example_batch(self.info))

  def eval_batch_size(self) -> int:
    n = self.runner.num_devices
    return -(-self.config.eval_batch // n) * n


def _setup(config: Config, info: dulx_data.DatasetInfo) -> _Setup:
  model = models.build_model(config.model, info, config.model_options, dtype=_dtype(config))
  reason = getattr(model, 'pmap_unsupported', None) if config.parallel == 'pmap' else None
  if reason:
    raise ConfigError(f'--parallel=pmap: {reason}')
  tx, schedule = step_lib.make_optimizer(config)
  runner = step_lib.make_runner(config.parallel, config.batch_size)
  init_fn = step_lib.make_init_fn(model, tx, config.ema_decay)
  return _Setup(config, info, model, tx, schedule, runner, init_fn)


def _restore_run(workdir: str, step: int | None = None) -> tuple[_Setup, TrainState]:
  saved = _read_run(workdir)
  if saved is None:
    raise CheckpointError(f'{workdir} holds no trained run ({_CONFIG_FILE} is missing).')
  config, info = saved
  setup = _setup(config.replace(parallel='jit'), info)
  with Checkpoints(os.path.join(workdir, _CHECKPOINTS), read_only=True) as reader:
    state = reader.restore(setup.abstract_state(), step)
  return setup, state


def restore(workdir: str, step: int | None = None) -> tuple[flax.linen.Module, TrainState, Config]:
  """Loads a trained run for use from Python: `model, state, config = dulx.restore(workdir)`.

  Then e.g. `model.apply(state.variables(), x, method='log_prob')` scores data and
  `dulx.sampling.sample(model, state.variables(), rng, 16)` draws samples.
  """
  setup, state = _restore_run(os.path.abspath(workdir), step)
  return setup.model, state, setup.config


_EVAL_DATA_SEED = 0  # The eval images' binarization: one draw for every run.


def evaluate_dataset(setup: _Setup, variables: Any, ds: dulx_data.Dataset, seed: int,
                     importance_samples: int = 1) -> dict[str, float]:
  """NLL (nats per example) and bits/dim over a whole dataset, in fixed-size batches.

  The data's own randomness (stochastic binarization) is drawn with seed
  `_EVAL_DATA_SEED` whatever `seed` is, so runs of every seed score the same images;
  `seed` fixes the model's noise (a flow's dequantization), batch i's from (seed, i).
  With `importance_samples` K > 1 (models whose `log_prob_is_bound`) the NLL is the
  importance-weighted bound over K draws of that noise (`dulx.eval.importance`),
  the first of them the one-draw evaluation's.
  """
  one_draw = step_lib.make_log_prob_fn(setup.model)

  def scores(variables, batch, rng):
    return importance.importance_weighted(lambda key: one_draw(variables, batch, key), rng,
                                          importance_samples)

  # Scores come back whole to every process, whichever devices scored them.
  log_prob_fn = jax.jit(scores, out_shardings=setup.runner.replicated)
  variables = jax.device_put(variables, setup.runner.replicated)
  total, count = 0.0, 0
  base_rng = jax.random.PRNGKey(seed)
  batches = dulx_data.eval_batches(ds, setup.eval_batch_size(), seed=_EVAL_DATA_SEED)
  for i, (batch, valid) in enumerate(batches):
    rng = jax.random.fold_in(base_rng, i)
    log_prob = np.asarray(jax.device_get(log_prob_fn(variables, setup.runner.shard(batch), rng)))
    total += float(-log_prob[:valid].astype(np.float64).sum())
    count += valid
  nll = total / count
  return {'nll': nll, 'bits_per_dim': float(objectives.bits_per_dim(nll, setup.num_dims))}


def _labels(setup: _Setup, num: int, label: int | None = None) -> np.ndarray | None:
  """[num] int32 labels of the samples of a class-conditional model: all `label`, or
  (None) the classes in turn, 0, 1, ...; None for an unconditional model.

  Raises:
    ConfigError: `label` for an unconditional model, or out of [0, num_classes).
  """
  classes = getattr(setup.model, 'num_classes', None)  # The data's classes when conditional.
  if label is None:
    return None if classes is None else np.arange(num, dtype=np.int32) % classes
  if classes is None:
    raise ConfigError(f'--label={label}: this {setup.config.model} is not class-conditional '
                      '(it was trained without --conditional or on unlabelled data).')
  if not 0 <= label < classes:
    raise ConfigError(f'--label={label} is not a class of {setup.info.spec}: it must be in '
                      f'[0, {classes}).')
  return np.full(num, label, np.int32)


def _draw(setup: _Setup, variables: Any, rng: jax.Array, num: int, temperature: float = 1.0,
          labels: np.ndarray | None = None, **given: np.ndarray) -> np.ndarray:
  """`num` samples; `given` (given, given_mask) completes partly given images instead."""
  y = None if labels is None else jnp.asarray(labels)
  out = sampling.sample(setup.model, variables, rng, num, y=y, temperature=temperature, **given)
  return np.asarray(jax.device_get(out))


def _images_to_complete(setup: _Setup, num: int, rows: int, dataset: str | None,
                        split: str | None, workdir: str) -> dict[str, np.ndarray]:
  """The first `num` images of `split` (as evaluated), and the mask of their top `rows` rows.

  Returns {'x': [num, H, W, C] levels, 'given_mask': bool, like x, and 'y' for labelled
  data}. Raises ConfigError where completion would not be conditioning on those rows:
  non-image data, a model that samples itself (the flows), or one whose order puts
  other dimensions before them.
  """
  config, info, model = setup.config, setup.info, setup.model
  if info.alphabet is not None or len(info.shape) != 3:
    raise ConfigError(f'--given_rows needs image data; {info.spec} is not.')
  if not 0 < rows < info.shape[0]:
    raise ConfigError(f'--given_rows={rows} must be in [1, {info.shape[0]}) for images of '
                      f'{info.shape[0]} rows.')
  if callable(getattr(model, 'sample', None)):
    raise ConfigError(f'--given_rows: this {config.model} samples whole images itself (it is '
                      'not one of the discrete autoregressive models), so it cannot complete rows.')
  mask = np.zeros(info.shape, bool)
  mask[:rows] = True
  if not np.array_equal(np.sort(np.asarray(model.ordering())[:mask.sum()]), np.flatnonzero(mask)):
    raise ConfigError(f'--given_rows: this {config.model} does not draw the top rows first, so '
                      'its samples could not be conditioned on them.')
  ds = _fitting_data(setup, dataset, split, workdir)
  if len(ds.x) < num:
    raise ConfigError(f'--num_samples={num} is more than the {len(ds.x)} images to complete.')
  batch, _ = next(dulx_data.eval_batches(ds, num, seed=_EVAL_DATA_SEED))
  return {**batch, 'given_mask': np.broadcast_to(mask, batch['x'].shape)}


def _samples_file(setup: _Setup, prefix: str) -> str:
  """Where samples go: `<prefix>.txt` for text data, else the picture `<prefix>.png`."""
  return prefix + ('.txt' if setup.info.alphabet is not None else '.png')


def _save_samples(setup: _Setup, samples: np.ndarray, prefix: str) -> None:
  """Writes `<prefix>.txt` (text: one sample a line) or the picture `<prefix>.png`."""
  path = _samples_file(setup, prefix)
  os.makedirs(os.path.dirname(prefix), exist_ok=True)
  alphabet = setup.info.alphabet
  if alphabet is not None:
    with open(path, 'w') as f:
      f.writelines(''.join(alphabet[i] for i in row) + '\n' for row in samples.reshape(len(samples), -1))
  else:
    viz.save_png(path, viz.samples_image(samples, setup.info.num_levels))


def _save_density_pictures(setup: _Setup, variables: Any, points: np.ndarray, prefix: str,
                           resolution: int = 128) -> list[str]:
  """For 1-D/2-D continuous points: `<prefix>_density.png`, and `<prefix>_latent.png` for flows.

  The density is exp(log p) on a square grid over the points' range (plus 10% on
  each side); the latent picture is the histogram of forward(points) over the
  flow's `latent_bounds` (uniform on the unit square for a CDF flow, a standard
  normal for the others), the picture of how well the flow fits. Returns the paths.
  """
  num_dims = math.prod(setup.info.shape)
  if setup.info.num_levels is not None or num_dims not in (1, 2):  # Discrete data (text too): none.
    return []
  low, high = float(points.min()), float(points.max())
  margin = 0.1 * max(high - low, 1e-6)
  grid = viz.grid_points((low - margin, high + margin), num_dims, resolution)
  log_prob_fn = jax.jit(step_lib.make_log_prob_fn(setup.model))
  rng = jax.random.PRNGKey(setup.config.seed)
  chunk = 4096
  log_density = np.concatenate([
      np.asarray(log_prob_fn(variables, {'x': grid[i:i + chunk].reshape(-1, *setup.info.shape)}, rng))
      for i in range(0, len(grid), chunk)])
  paths = [prefix + '_density.png']
  viz.save_png(paths[0], viz.density_plot(log_density, num_dims))
  bounds = getattr(setup.model, 'latent_bounds', None)
  if bounds is not None:
    forward = jax.jit(lambda v, x: setup.model.apply(v, x, method='forward')[0])
    z = np.concatenate([np.asarray(forward(variables, points[i:i + chunk]))
                        for i in range(0, len(points), chunk)])
    paths.append(prefix + '_latent.png')
    viz.save_png(paths[1], viz.latent_plot(z.reshape(len(z), num_dims), bounds))
  return paths


@contextlib.contextmanager
def _catch_signals():
  """Records SIGINT/SIGTERM instead of dying, so the loop can checkpoint first."""
  caught = []

  def handler(signum, frame):
    del frame
    caught.append(signum)

  previous = {}
  try:
    for sig in (signal.SIGINT, signal.SIGTERM):
      previous[sig] = signal.signal(sig, handler)
  except ValueError:  # Not the main thread: signals stay as they are.
    pass
  try:
    yield caught
  finally:
    for sig, h in previous.items():
      signal.signal(sig, h)


def _check_finite(step: int, metrics: dict[str, float], last_checkpoint: int | None, workdir: str) -> None:
  for name, value in metrics.items():
    if not math.isfinite(value):
      where = (f'the last good checkpoint (step {last_checkpoint}) is intact in {workdir}'
               if last_checkpoint is not None else 'no checkpoint was saved yet')
      raise DivergedError(f'{name} is {value} at step {step}; training stopped and {where}.')


def train_and_evaluate(config: Config, workdir: str, flagfile: str | None = None) -> dict[str, float]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns final eval metrics.

  `flagfile`, the command line's flags in flagfile form, is saved as `flags.txt`
  so that `--flagfile=<workdir>/flags.txt` reruns the experiment.
  """
  workdir = os.path.abspath(workdir)
  # 1. Everything that can fail on bad input, before anything is written. The saved
  # config names every model option, so a later default cannot change what it built.
  config = config.replace(model_options=_all_options(config))
  train_ds = load_data(config, config.train_split)
  eval_ds = load_data(config, config.eval_split)
  info = train_ds.info
  _check_fits(eval_ds.info, info, workdir)
  saved = _read_run(workdir)
  if saved is not None:
    old, old_info = saved
    _check_resumable(old, old_info, config, info, workdir)
  setup = _setup(config, info)
  if config.ema_decay and 'batch_stats' in setup.abstract_state().model_state:
    raise ConfigError(
        f'--ema_decay averages the parameters but not batch norm\'s running statistics, which '
        f'follow the live parameters: this {config.model} would be evaluated and sampled with '
        'the statistics of another network. Use a norm without batch statistics (RealNVP: '
        '--norm=act), or train without --ema_decay.')
  batcher = dulx_data.Batcher(train_ds, config.batch_size, seed=config.seed)
  _check_workdir_writable(workdir)

  # 2. One run at a time holds the workdir: the checkpoint it resumes from is the latest.
  os.makedirs(workdir, exist_ok=True)
  with _hold_workdir(workdir):
    return _train(setup, batcher, eval_ds, workdir, flagfile)


def _train(setup: _Setup, batcher: dulx_data.Batcher, eval_ds: dulx_data.Dataset, workdir: str,
           flagfile: str | None) -> dict[str, float]:
  """Resumes from the latest checkpoint, writes the run's description and trains."""
  config = setup.config
  ckpt_dir = os.path.join(workdir, _CHECKPOINTS)
  restored = None
  if os.path.isdir(ckpt_dir):
    with Checkpoints(ckpt_dir, read_only=True) as reader:
      if reader.latest_step() is not None:
        restored = reader.restore(setup.abstract_state())
  # With several processes (`jax.distributed`) all of them train, evaluate and save
  # checkpoints (Orbax coordinates those); process 0 alone writes the other files.
  primary = jax.process_index() == 0
  if primary:
    _write_run(workdir, config, setup.info)
    if flagfile is not None:
      with open(os.path.join(workdir, 'flags.txt'), 'w') as f:
        f.write(flagfile)
  runner = setup.runner
  if restored is not None:
    state = runner.put_state(restored)
    logging.info('Resuming %s from step %d.', workdir, int(restored.step))
  else:
    state = runner.init(setup.init_fn, jax.random.PRNGKey(config.seed), batcher(0))
  train_step = runner.compile(step_lib.make_train_step(
      step_lib.likelihood_loss(setup.model, setup.num_dims), setup.tx, setup.schedule,
      config.ema_decay, axis_name='data' if runner.parallel == 'pmap' else None))
  checkpoints = Checkpoints(ckpt_dir, keep=config.keep_checkpoints)
  writer = MetricWriter(workdir) if primary else None
  start = int(runner.host_state(state).step)
  last_checkpoint = checkpoints.latest_step()
  final = {}

  def due(every: int, s: int) -> bool:
    return s == config.num_steps or (every > 0 and s % every == 0)

  bar = tqdm.tqdm(total=config.num_steps, initial=start, disable=not sys.stderr.isatty(),
                  dynamic_ncols=True, desc=config.model)
  try:
    with _catch_signals() as caught:
      pending = None  # (step, device metrics) of the previous step, checked one step late.
      window_start, window_steps = time.perf_counter(), 0
      for s in range(start + 1, config.num_steps + 1):
        state, metrics = train_step(state, runner.put_batch(batcher(s - 1)))
        window_steps += 1
        bar.update(1)
        if pending is not None:  # Fetching the previous step's metrics keeps the device busy.
          _check_finite(pending[0], runner.metrics(pending[1]), last_checkpoint, workdir)
        pending = (s, metrics)
        # Read once: a signal that lands later in this iteration is handled by the next
        # one, so a stop always follows its checkpoint.
        stop = bool(caught)
        events = {'log': due(config.log_every, s), 'eval': due(config.eval_every, s),
                  'checkpoint': due(config.checkpoint_every, s) or stop,
                  'sample': due(config.sample_every, s)}
        if not any(events.values()):
          continue
        record = runner.metrics(metrics)
        pending = None
        _check_finite(s, record, last_checkpoint, workdir)
        elapsed = time.perf_counter() - window_start
        record['examples_per_sec'] = window_steps * config.batch_size / max(elapsed, 1e-9)
        window_start, window_steps = time.perf_counter(), 0
        host = runner.host_state(state)
        if events['eval']:
          final = evaluate_dataset(setup, host.variables(), eval_ds, config.seed)
          record.update({f'eval/{k}': v for k, v in final.items()})
        if events['sample'] and primary:
          variables = jax.device_get(host.variables())  # On this process alone.
          samples = _draw(setup, variables, jax.random.fold_in(jax.random.PRNGKey(config.seed), s),
                          config.num_samples, labels=_labels(setup, config.num_samples))
          prefix = os.path.join(workdir, 'samples', f'step_{s:08d}')
          _save_samples(setup, samples, prefix)
          _save_density_pictures(setup, variables, eval_ds.x, prefix)
        if events['checkpoint']:
          checkpoints.save(s, host)
          last_checkpoint = s
        if events['log'] or events['eval']:
          if writer is not None:
            writer.write(s, record)
          bar.set_postfix(loss=f'{record["loss"]:.4f}')
          if bar.disable:
            logging.info('step %d/%d: %s', s, config.num_steps,
                         ', '.join(f'{k}={v:.4g}' for k, v in sorted(record.items())))
        if stop:
          checkpoints.wait()
          raise Interrupted(caught[0], s)
      if pending is not None:
        _check_finite(pending[0], runner.metrics(pending[1]), last_checkpoint, workdir)
  finally:
    bar.close()
    if writer is not None:
      writer.close()
    checkpoints.close()
  if not final:  # Nothing left to train: report the evaluation of the restored state.
    final = evaluate_dataset(setup, runner.host_state(state).variables(), eval_ds, config.seed)
  logging.info('final eval: nll=%.4f nats, bits/dim=%.4f', final['nll'], final['bits_per_dim'])
  return final


def evaluate(workdir: str, dataset: str | None = None, split: str | None = None,
             importance_samples: int = 1, use_ema: bool = True) -> dict[str, Any]:
  """Scores the latest checkpoint of `workdir` on any dataset/split of the trained shape.

  The data is preprocessed as in training (binarization, quantization). A flow on
  discrete data scores its dequantization bound; `importance_samples` K > 1 tightens
  it to the importance-weighted bound over K draws (`dulx.eval.importance`). A run
  with an EMA is scored with the EMA parameters, or with `use_ema=False` the live ones.

  Raises:
    ConfigError: K < 1, or K > 1 for a model whose likelihood is no stochastic bound.
  """
  if importance_samples < 1:
    raise ConfigError(f'--importance_samples must be >= 1, got {importance_samples}.')
  setup, state = _restore_run(workdir)
  config = setup.config
  if importance_samples > 1 and not getattr(setup.model, 'log_prob_is_bound', False):
    raise ConfigError(
        f'--importance_samples={importance_samples} tightens the dequantization bound of a flow '
        f'on discrete data (FFJORD\'s only with --eval_trace=exact); this {config.model} on '
        f'{setup.info.spec} has no such bound to tighten.')
  dataset, split = dataset or config.dataset, split or config.eval_split
  ds = _fitting_data(setup, dataset, split, workdir)
  out = evaluate_dataset(setup, state.variables(use_ema), ds, config.seed, importance_samples)
  return {**out, 'num_examples': len(ds.x), 'step': int(state.step), 'dataset': dataset, 'split': split,
          'importance_samples': importance_samples,
          'params': 'ema' if use_ema and state.ema_params is not None else 'live'}


def sample(workdir: str, num: int, seed: int = 0, temperature: float = 1.0,
           output: str | None = None, label: int | None = None, given_rows: int = 0,
           dataset: str | None = None, split: str | None = None,
           use_ema: bool = True) -> dict[str, Any]:
  """Draws `num` samples from the latest checkpoint, or completes `num` images.

  Writes `<output>.npy` and a picture `<output>.png` (text data: `<output>.txt`, one
  sample a line); returns their paths under 'npy' and 'picture'. The default output,
  `<workdir>/samples/sample_step_<step>_seed<seed>_n<num>[_t<temperature>][_label<label>]
  [_given<rows>[_<digest of dataset and split>]][_live]`, names everything that decides
  the draw (`_live`: a run with an EMA drawn with its live parameters, `use_ema=False`). A
  class-conditional model draws every sample of class `label`, or (None) the
  classes in turn, 0, 1, ...; the labels are returned under 'labels' (None for an
  unconditional model).

  With `given_rows` > 0 an autoregressive model completes images: the first `num` of
  `split` of `dataset` (default: the run's eval split), preprocessed as in evaluation,
  keep their top `given_rows` rows and the rest is drawn; the picture shows, for each
  image, what was given (the rest grey), the completion and the image itself. A
  class-conditional model completes each image under its own label, or under `label`
  when one is given.
  """
  if num <= 0:
    raise ConfigError(f'--num_samples must be positive, got {num}.')
  sampling.autoregressive.check_temperature(temperature)
  setup, state = _restore_run(workdir)
  labels = _labels(setup, num, label)
  given = {}
  if given_rows:
    images = _images_to_complete(setup, num, given_rows, dataset, split, workdir)
    given = {'given': images['x'], 'given_mask': images['given_mask']}
    if label is None and labels is not None:  # Each image under its own label.
      classes = setup.model.num_classes
      if 'y' not in images or not np.all((images['y'] >= 0) & (images['y'] < classes)):
        raise ConfigError(f'--given_rows: the images to complete have no labels in [0, {classes}) '
                          'for this class-conditional model; give --label.')
      labels = images['y'].astype(np.int32)
  step = int(state.step)
  if output is None:  # Named by all that decides the draw, so one draw never replaces another.
    name = f'sample_step_{step:08d}_seed{seed}_n{num}'
    name += '' if temperature == 1 else f'_t{float(temperature)!r}'
    name += '' if label is None else f'_label{label}'
    if given_rows:
      name += f'_given{given_rows}'
      if dataset or split:  # Other images than the run's eval split: a digest of which.
        name += '_' + hashlib.sha256(f'{dataset}|{split}'.encode()).hexdigest()[:8]
    name += '_live' if not use_ema and state.ema_params is not None else ''
    output = os.path.join(workdir, 'samples', name)
  _check_workdir_writable(os.path.dirname(os.path.abspath(output)))
  samples = _draw(setup, state.variables(use_ema), jax.random.PRNGKey(seed), num, temperature, labels,
                  **given)
  tiles = samples
  if given:
    tiles = viz.completion_tiles(given['given'], given['given_mask'], samples, setup.info.num_levels)
  picture = _samples_file(setup, output)
  if jax.process_index() == 0:  # Every process draws the same samples; one writes them.
    _save_samples(setup, tiles, output)
    np.save(output + '.npy', samples)
  return {'picture': picture, 'npy': output + '.npy', 'num': num, 'step': step,
          'shape': list(samples.shape), 'labels': None if labels is None else labels.tolist()}
