"""How hard trained FFJORD fields are to solve: the ODE solver's step count at checkpoints.

  python benchmarks/solver_steps.py --workdirs=/tmp/dulx/ffjord_mnist,/tmp/dulx/ffjord_mnist_rnode

For each workdir and each checkpoint it keeps (or those of --steps), one JSON line
{workdir, step, split, ode_steps, nll, bits_per_dim, seconds, device}: the training pass
(Hutchinson trace, as the train step runs it) of the restored model on --batches fixed
batches of the run's own training split (or of --split, e.g. its eval split, in order):
the adaptive solver's steps summed over the blocks (mean per batch), the NLL in nats per
example and bits/dim (means over the batches), and the wall time of one compiled pass
(the fastest). RNODE's penalties are switched off for the count, so that runs trained
with and without them are solved alike: the count measures the learned fields, not
the penalties' extra ODE states.
"""

import json
import os
import time

from absl import app
from absl import flags
import jax
import numpy as np

from dulx import data
from dulx import objectives
from dulx import train
from dulx.errors import ConfigError
from dulx.train import step as step_lib

_WORKDIRS = flags.DEFINE_list('workdirs', [], 'Run directories of trained FFJORD models.')
_STEPS = flags.DEFINE_list('steps', [], 'Checkpoint steps to measure (default: every kept one).')
_BATCHES = flags.DEFINE_integer('batches', 4,
                                'Batches per checkpoint (the same ones for every checkpoint and run).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 16, 'Examples per batch.')
_SPLIT = flags.DEFINE_string('split', '', "Split of the run's dataset (default: its training split).")


def _kept_steps(workdir: str) -> list[int]:
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    raise ConfigError(f'{workdir} has no checkpoints directory.')
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def measure(workdir: str, step: int, batches: int, batch_size: int, split: str = '') -> dict:
  """The solver-step count, NLL and pass time of `workdir`'s checkpoint `step`."""
  model, state, config = train.restore(workdir, step)
  if not hasattr(model, 'kinetic_weight'):
    raise ConfigError(f'{workdir} holds a {config.model} run, not an ffjord one.')
  model = model.clone(kinetic_weight=0.0, jacobian_weight=0.0)
  ds = train.load_data(config, split or config.train_split)
  batcher = data.Batcher(ds, batch_size, seed=config.seed, shuffle=not split)
  num_dims = int(np.prod(ds.info.shape))
  loss_fn = jax.jit(lambda params, batch, rng: train.likelihood_loss(model, num_dims)(
      params, state.model_state, batch, step_lib.step_rngs(rng))[1][0])
  rows, seconds = [], []
  for i in range(batches):
    batch = {k: jax.numpy.asarray(v) for k, v in batcher(i).items()}
    rng = jax.random.PRNGKey(i)
    if i == 0:
      jax.block_until_ready(loss_fn(state.params, batch, rng))  # Compiles.
    start = time.perf_counter()
    metrics = jax.device_get(loss_fn(state.params, batch, rng))
    seconds.append(time.perf_counter() - start)
    rows.append(metrics)
  nll = float(np.mean([r['nll'] for r in rows]))
  return {'workdir': workdir, 'step': step, 'split': split or config.train_split,
          'ode_steps': float(np.mean([r['ode_steps'] for r in rows])), 'nll': nll,
          'bits_per_dim': float(objectives.bits_per_dim(nll, num_dims)),
          'seconds': min(seconds), 'device': jax.devices()[0].platform}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not _WORKDIRS.value:
    raise app.UsageError('--workdirs must name at least one run directory.')
  for workdir in _WORKDIRS.value:
    steps = [int(s) for s in _STEPS.value] or _kept_steps(workdir)
    for step in steps:
      print(json.dumps(measure(workdir, step, _BATCHES.value, _BATCH_SIZE.value, _SPLIT.value)),
            flush=True)


if __name__ == '__main__':
  app.run(main)
