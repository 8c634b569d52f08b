"""The experiment command line shared by every `experiments/<model>.py`.

An experiment script is one call, `cli.run('<model>')`. The flags are generated:
the common ones from the fields of `dulx.train.Config`, the model's own from the
keyword options of its builder (`dulx.models`), so a flag and the option it sets
always have the same name, default and meaning. Nothing here is defined at
import: the library stays free of global flags.

Modes:
  --mode=train   train (resuming from the workdir's latest checkpoint), print final eval
  --mode=eval    score the workdir's latest checkpoint on --dataset/--eval_split
                 (--importance_samples=K: a flow's importance-weighted bound over K draws)
  --mode=sample  write a PNG grid and an .npy of samples from the latest checkpoint
                 (--label=K: every sample of class K, for a class-conditional model;
                 --given_rows=R: complete eval images from their top R rows)
The last line on stdout is a JSON object (eval: `nll` in nats/example and `bits_per_dim`).
Bad input prints one line on stderr and exits with status 2, without touching the workdir.
"""

import dataclasses
import inspect
import json
import logging as std_logging
import os
import re
import sys
import typing
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax

from dulx import models
from dulx import train
from dulx.errors import ConfigError, UserError
from dulx.train.config import CHOICES

__all__ = ['run']

FLAGS = flags.FLAGS

_HELP = {
    'dataset': 'Dataset spec: digits, toy2d:<name>, toy1d:<name>, idx:PATH, npz:PATH, tfds:<name>.',
    'train_split': "Training split, tfds-style slicing: 'train[:8000]', '[8000:]', 'train[:80%]'.",
    'eval_split': 'Evaluation split (same syntax); evaluated whole.',
    'binarize': 'none | threshold (x > 0.5, fixed) | stochastic (x ~ Bernoulli(pixel), redrawn each batch).',
    'quantize': 'Quantize to this many levels (continuous toy data: bins over its range); 0 = off.',
    'batch_size': 'Global batch size (split over devices).',
    'eval_batch_size': 'Evaluation batch size; 0 = --batch_size.',
    'num_steps': 'Total training steps; rerunning with a larger value continues the run.',
    'log_every': 'Write train metrics every this many steps.',
    'eval_every': 'Evaluate on the whole eval split every this many steps (0: at the end only).',
    'checkpoint_every': 'Checkpoint every this many steps (0: at the end only); also on SIGINT/SIGTERM.',
    'sample_every': 'Write a sample grid every this many steps (0: at the end only).',
    'keep_checkpoints': 'How many of the latest checkpoints to keep.',
    'num_samples': 'Samples per grid (and in --mode=sample).',
    'optimizer': 'adam | adamw.',
    'learning_rate': 'Peak learning rate.',
    'lr_schedule': 'constant | cosine (decay to 0 at --num_steps).',
    'warmup_steps': 'Linear warm-up steps.',
    'weight_decay': 'Decoupled weight decay; needs --optimizer=adamw.',
    'grad_clip': 'Clip gradients to this global norm; 0 = off.',
    'ema_decay': ('Keep an EMA of the parameters for eval/sampling with this decay, warmed up as '
                  'min(decay, (1 + t) / (10 + t)) at update t; 0 = off.'),
    'seed': 'Seed of initialisation, data order and sampling.',
    'dtype': 'Computation dtype: float32 | bfloat16 (params and loss stay float32).',
    'parallel': 'jit (sharded over a data mesh) | pmap; both give the same update.',
}
_CONFIG_FLAGS = tuple(f.name for f in dataclasses.fields(train.Config)
                      if f.name not in ('model', 'model_options'))


def _define(name: str, default: Any, help_text: str, choices: tuple[str, ...] | None = None,
            flag_values: flags.FlagValues = FLAGS) -> None:
  kw = dict(flag_values=flag_values)
  if choices:
    flags.DEFINE_enum(name, default, choices, help_text, **kw)
  elif isinstance(default, bool):
    flags.DEFINE_bool(name, default, help_text, **kw)
  elif isinstance(default, int):
    flags.DEFINE_integer(name, default, help_text, **kw)
  elif isinstance(default, float):
    flags.DEFINE_float(name, default, help_text, **kw)
  elif isinstance(default, (tuple, list)):
    flags.DEFINE_list(name, [str(v) for v in default], help_text, **kw)
  else:
    flags.DEFINE_string(name, default, help_text, **kw)


def _arg_docs(fn) -> dict[str, str]:
  """`name: text` entries of a Google-style docstring's Args section."""
  doc = inspect.getdoc(fn) or ''
  args = doc.split('Args:', 1)[1] if 'Args:' in doc else ''
  out, current = {}, None
  for line in args.splitlines():
    match = re.match(r'^\s{2,4}(\w+)( \(.*?\))?:\s*(.*)$', line)
    if match:
      current = match.group(1)
      out[current] = match.group(3)
    elif current and line.strip() and not re.match(r'^\S', line):
      out[current] += ' ' + line.strip()
    elif line.strip() and re.match(r'^\S', line):
      break
  return out


def _model_params(model: str) -> dict[str, inspect.Parameter]:
  params = inspect.signature(models.get_builder(model)).parameters
  return {n: p for n, p in params.items()
          if p.kind == inspect.Parameter.KEYWORD_ONLY and n != 'dtype'}


def _define_flags(model: str, flag_values: flags.FlagValues = FLAGS) -> None:
  """Defines the common flags and `model`'s own in `flag_values` (the script's: FLAGS)."""
  kw = dict(flag_values=flag_values)
  for f in dataclasses.fields(train.Config):
    if f.name in _CONFIG_FLAGS:
      _define(f.name, f.default, _HELP.get(f.name, f.name), CHOICES.get(f.name), **kw)
  flags.DEFINE_string('workdir', os.path.join('/tmp/dulx', model),
                      'Run directory: checkpoints, metrics.jsonl, TensorBoard events, samples, flags.',
                      **kw)
  flags.DEFINE_enum('mode', 'train', ('train', 'eval', 'sample'), 'What to do with the workdir.',
                    **kw)
  flags.DEFINE_integer('importance_samples', 1, '--mode=eval, flows on discrete data: score the '
                       'importance-weighted bound over this many draws of the dequantization noise, '
                       'tighter than the one-draw bound (1).', **kw)
  flags.DEFINE_boolean('use_ema', True, '--mode=eval|sample, runs trained with --ema_decay: use the '
                       'EMA parameters (--nouse_ema: the live ones).', **kw)
  flags.DEFINE_float('temperature', 1.0, 'Sampling temperature (--mode=sample).', **kw)
  flags.DEFINE_integer('label', None, '--mode=sample, class-conditional models: draw every '
                       'sample of this class (default: the classes in turn, 0, 1, ...).', **kw)
  flags.DEFINE_integer('given_rows', 0, '--mode=sample, autoregressive models: complete the first '
                       '--num_samples images of --eval_split (of --dataset; default the run\'s), '
                       'their top rows given (0: draw from scratch).', **kw)
  flags.DEFINE_string('output', None, '--mode=sample: path prefix of the .png/.npy (default '
                      '<workdir>/samples/sample_step_<step>_seed<seed>_n<num>..., named by '
                      'all that decides the draw).', **kw)
  flags.DEFINE_string('coordinator_address', None, 'Multi-host: host:port of process 0.', **kw)
  flags.DEFINE_integer('num_processes', 1, 'Multi-host: number of processes.', **kw)
  flags.DEFINE_integer('process_id', 0, 'Multi-host: index of this process.', **kw)
  docs = _arg_docs(models.get_builder(model))
  for name, param in _model_params(model).items():
    choices = typing.get_args(param.annotation) if typing.get_origin(param.annotation) is typing.Literal else None
    _define(name, param.default, docs.get(name, f'Model option {name}.'), choices, **kw)


def _option_value(name: str, default: Any, flag_values: flags.FlagValues = FLAGS) -> Any:
  value = flag_values[name].value
  if isinstance(default, (tuple, list)):
    try:
      kind = type(default[0]) if default else int
      return [kind(v) for v in value]
    except ValueError:
      raise ConfigError(f'--{name} must be a comma-separated list of numbers, got {",".join(value)!r}.') from None
  return value


def _config(model: str, flag_values: flags.FlagValues = FLAGS) -> train.Config:
  """The run's Config from parsed flags; raises ConfigError (one line) on a bad value."""
  options = {n: _option_value(n, p.default, flag_values) for n, p in _model_params(model).items()}
  return train.Config(model=model, model_options=options,
                      **{n: flag_values[n].value for n in _CONFIG_FLAGS})


def _flagfile_text(model: str) -> str:
  """The flags of this run, as a flagfile that reproduces it."""
  names = _CONFIG_FLAGS + tuple(_model_params(model)) + ('workdir',)
  return ''.join(FLAGS[n].serialize() + '\n' for n in names if FLAGS[n].value is not None)


def _library_warnings_only(record: std_logging.LogRecord) -> bool:
  """JAX (its search for accelerators) and Orbax (every file it opens) log at INFO; the
  run's own progress is what users read, so only their warnings get through."""
  noisy = any(f'{os.sep}{lib}{os.sep}' in record.pathname for lib in ('jax', 'orbax'))
  return record.levelno >= std_logging.WARNING or not noisy


def _parse(argv: list[str]) -> list[str]:
  try:
    return FLAGS(argv)
  except flags.Error as e:
    sys.stderr.write(f'error: {str(e).removeprefix("ERROR:: ")}\n')  # absl's flagfile errors have it.
    sys.exit(2)


def _main(model: str, argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.get_absl_handler().addFilter(_library_warnings_only)
  try:
    if FLAGS.num_processes > 1:
      jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    # --mode=eval|sample read the run's data unless --dataset/--eval_split name other data.
    dataset = FLAGS.dataset if FLAGS['dataset'].present else None
    split = FLAGS.eval_split if FLAGS['eval_split'].present else None
    if FLAGS.mode == 'eval':
      out = train.evaluate(FLAGS.workdir, dataset, split, FLAGS.importance_samples, FLAGS.use_ema)
      k = FLAGS.importance_samples
      bound = f', importance-weighted over {k} draws' if k > 1 else ''
      print(f'{out["dataset"]} {out["split"]}: nll {out["nll"]:.4f} nats, {out["bits_per_dim"]:.4f} '
            f'bits/dim over {out["num_examples"]} examples (step {out["step"]}{bound})')
    elif FLAGS.mode == 'sample':
      out = train.sample(FLAGS.workdir, FLAGS.num_samples, FLAGS.seed, FLAGS.temperature, FLAGS.output,
                         FLAGS.label, FLAGS.given_rows, dataset, split, FLAGS.use_ema)
      print(f'wrote {out["picture"]} and {out["npy"]}')
    else:
      config = _config(model)
      final = train.train_and_evaluate(config, FLAGS.workdir, flagfile=_flagfile_text(model))
      out = {**final, 'step': config.num_steps, 'workdir': os.path.abspath(FLAGS.workdir)}
      print(f'final eval ({config.dataset} {config.eval_split}): nll {final["nll"]:.4f} nats, '
            f'{final["bits_per_dim"]:.4f} bits/dim')
  except UserError as e:
    sys.stderr.write(f'error: {e}\n')
    sys.exit(2)
  except train.Interrupted as e:
    logging.warning('%s', e)
    sys.exit(128 + e.signum)
  print(json.dumps(out), flush=True)


def run(model: str) -> None:
  """The whole of `experiments/<model>.py`: defines the flags, parses them, runs --mode."""
  _define_flags(model)
  app.run(lambda argv: _main(model, argv), flags_parser=_parse)
