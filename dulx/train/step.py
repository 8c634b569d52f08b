"""The pure train step, and how it is compiled: `jax.jit` over a mesh, or `jax.pmap`.

One function, `train_step(state, batch) -> (state, metrics)`, serves both. Under
`jit` the batch is sharded over a `('data',)` mesh and XLA inserts the gradient
all-reduce; under `pmap` the same function runs per device on its shard and
`lax.pmean` averages gradients and metrics. Both give the same update (tested on
fake CPU devices).
"""

from collections.abc import Callable, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import optax

from dulx import objectives
from dulx.errors import ConfigError
from dulx.train.config import Config
from dulx.train.state import TrainState

__all__ = [
    'Batch', 'LossFn', 'RNG_STREAMS', 'JitRunner', 'PmapRunner', 'make_runner', 'make_optimizer', 'step_rngs',
    'SOWN_COLLECTIONS', 'likelihood_loss', 'make_init_fn', 'make_train_step', 'make_log_prob_fn',
]

Batch = Mapping[str, jax.Array]
# The named rng streams a model may draw from in `apply` (`self.make_rng(name)`):
# 'dropout', 'mask' (MADE's connectivity), 'dequantize' (flows' dequantization
# noise) and 'noise' (any other, e.g. FFJORD's Hutchinson probe).
RNG_STREAMS = ('dropout', 'mask', 'dequantize', 'noise')
# Streams that differ between the devices of a pmap (per-example noise); the others
# are one choice for the whole batch (MADE's mask must agree on every device).
_PER_DEVICE_STREAMS = ('dropout', 'dequantize', 'noise')


def step_rngs(rng: jax.Array) -> dict[str, jax.Array]:
  """One key per stream of RNG_STREAMS, all derived from `rng`."""
  return {name: jax.random.fold_in(rng, i) for i, name in enumerate(RNG_STREAMS)}
# loss_fn(params, model_state, batch, rngs) -> (loss, (metrics, new_model_state)).
LossFn = Callable[[Any, Any, Batch, dict[str, jax.Array]], tuple[jax.Array, tuple[dict, Any]]]


def make_optimizer(config: Config) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Builds the optimiser chain and its learning-rate schedule from the config."""
  if config.lr_schedule == 'cosine' and not config.warmup_steps:
    schedule = optax.cosine_decay_schedule(config.learning_rate, config.num_steps)
  elif config.lr_schedule == 'cosine':
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, config.warmup_steps, max(config.num_steps, config.warmup_steps + 1))
  elif config.warmup_steps:
    schedule = optax.linear_schedule(0.0, config.learning_rate, config.warmup_steps)
  else:
    schedule = optax.constant_schedule(config.learning_rate)
  parts = [optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip else []
  if config.optimizer == 'adamw':
    parts.append(optax.adamw(schedule, weight_decay=config.weight_decay))
  else:
    parts.append(optax.adam(schedule))
  return optax.chain(*parts), schedule


def _apply_args(batch: Batch) -> tuple[jax.Array, jax.Array | None]:
  return batch['x'], batch.get('y')


# Collections a model may `sow` into during a training pass (never model state):
# 'losses', scalar penalties that the harness adds to the loss (e.g. FFJORD's
# kinetic-energy regulariser), and 'metrics', scalars it only reports (e.g. the ODE
# solver's step count). Each name is reported as a metric, summed over its sown values.
SOWN_COLLECTIONS = ('losses', 'metrics')


def _sown_totals(collection: Mapping[str, Any]) -> dict[str, jax.Array]:
  """{name: sum of the values sown under it} for one sown collection (nested by module)."""
  totals = {}
  for path, value in flax.traverse_util.flatten_dict(flax.core.unfreeze(collection)).items():
    name = path[-1]
    total = sum(jnp.sum(jnp.asarray(v, jnp.float32)) for v in value)  # `sow` keeps a tuple.
    totals[name] = totals[name] + total if name in totals else total
  return totals


def likelihood_loss(model: flax.linen.Module, num_dims: int) -> LossFn:
  """Maximum likelihood through the model's `log_prob(x, y, train=True)`.

  Mutable collections present in `model_state` (e.g. batch statistics) are updated.
  The loss is the mean NLL in nats per dimension plus every penalty the model sowed
  into 'losses'; `nll` and `bits_per_dim` stay the likelihood alone, and each sown
  penalty and 'metrics' value is reported under its own name.
  """
  def loss_fn(params, model_state, batch, rngs):
    x, y = _apply_args(batch)
    mutable = [*model_state, *SOWN_COLLECTIONS]
    log_prob, variables = model.apply({'params': params, **model_state}, x, y, train=True,
                                      method='log_prob', rngs=rngs, mutable=mutable)
    variables = flax.core.unfreeze(variables)
    sown = {name: _sown_totals(variables.pop(name, {})) for name in SOWN_COLLECTIONS}
    loss, metrics = objectives.nll_loss(log_prob, num_dims)
    for name, penalty in sown['losses'].items():
      loss = loss + penalty
    metrics.update(sown['losses'], **sown['metrics'])
    return loss, (metrics, {name: variables[name] for name in model_state})
  return loss_fn


def make_log_prob_fn(model: flax.linen.Module) -> Callable[[Any, Batch, jax.Array], jax.Array]:
  """(variables, batch, rng) -> [B] log p(x) in nats, the evaluation-mode likelihood.

  `rng` feeds the streams of RNG_STREAMS for models whose likelihood draws noise
  (a flow's dequantization); deterministic models ignore it.
  """
  def log_prob_fn(variables, batch, rng):
    x, y = _apply_args(batch)
    return model.apply(variables, x, y, train=False, method='log_prob', rngs=step_rngs(rng))
  return log_prob_fn


def make_init_fn(model: flax.linen.Module, tx: optax.GradientTransformation,
                 ema_decay: float) -> Callable[[jax.Array, Batch], TrainState]:
  """(rng, example_batch) -> a fresh TrainState. Pure: shape it with eval_shape."""
  def init_fn(rng, batch):
    params_rng, dropout_rng, mask_rng, state_rng = jax.random.split(rng, 4)
    x, y = _apply_args(batch)
    rngs = {'params': params_rng, 'dropout': dropout_rng, 'mask': mask_rng,
            'dequantize': jax.random.fold_in(dropout_rng, 1), 'noise': jax.random.fold_in(dropout_rng, 2)}
    variables = model.init(rngs, x, y)
    variables = flax.core.unfreeze(variables)
    params = variables.pop('params')
    for name in SOWN_COLLECTIONS:  # Per-pass values, not state.
      variables.pop(name, None)
    return TrainState(step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params),
                      model_state=variables, ema_params=params if ema_decay else None,
                      rng=state_rng)
  return init_fn


def ema_decay_at(step: jax.Array, ema_decay: float) -> jax.Array:
  """The EMA's decay at update `step`: min(ema_decay, (1 + step) / (10 + step)).

  The EMA starts at the initial parameters; at a constant decay of 0.999 they would
  still weigh 0.999^1000 = 37% after 1,000 updates, so a short run would evaluate
  mostly untrained weights. The warm-up (TensorFlow's ExponentialMovingAverage with
  num_updates) averages over about the last tenth of the updates made so far until
  the decay reaches `ema_decay`.
  """
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, ema_decay: float = 0.0,
                    axis_name: str | None = None) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
  """Returns the pure `train_step(state, batch) -> (state, metrics)`.

  The step's randomness is `fold_in(state.rng, state.step)`, so step s draws the
  same numbers whether or not the run was interrupted before it. Under pmap
  (`axis_name` set) gradients, metrics and model state are averaged across
  devices, and the per-example noise streams are made device-specific (a mask
  choice such as MADE's must agree on every device). Models that draw such noise
  therefore see other (equally distributed) numbers under pmap than under jit.
  """
  def train_step(state: TrainState, batch: Batch):
    rngs = step_rngs(jax.random.fold_in(state.rng, state.step))
    if axis_name is not None:
      device = jax.lax.axis_index(axis_name)
      rngs.update({k: jax.random.fold_in(rngs[k], device) for k in _PER_DEVICE_STREAMS})
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (metrics, model_state)), grads = grad_fn(state.params, state.model_state, batch, rngs)
    metrics = {'loss': loss, **metrics}
    if axis_name is not None:
      grads, metrics, model_state = jax.lax.pmean((grads, metrics, model_state), axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = state.ema_params
    if ema_decay:
      decay = ema_decay_at(state.step, ema_decay)
      ema_params = optax.incremental_update(params, ema_params, 1.0 - decay)
    metrics.update(grad_norm=optax.global_norm(grads), param_norm=optax.global_norm(params),
                   learning_rate=jnp.asarray(schedule(state.step), jnp.float32))
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              model_state=model_state, ema_params=ema_params)
    return new_state, metrics
  return train_step


def _init_compiler_options() -> dict[str, Any] | None:
  """XLA options for the program that creates a run's state: compiled once, run once.

  On a CPU, LLVM's optimisation of that program (a threefry stream and an inverse
  error function per parameter tensor) is nearly all of its cost: PixelCNN++ at its
  digits config compiles in 14.2 s at XLA's default level, 3.0 s at level 0, and
  runs in milliseconds either way. A level-0 build's draws can differ from an
  optimised one's in the last bit (no fused multiply-adds); they are the same for
  the same seed on every run. On GPUs and TPUs, XLA's defaults.
  """
  return {'xla_backend_optimization_level': 0} if jax.default_backend() == 'cpu' else None


class JitRunner:
  """Compiles with `jax.jit` over a `('data',)` mesh: state replicated, batch sharded.

  Parameters are shaped with `eval_shape` and created already sharded; the state
  is donated to the step. With several processes (`jax.distributed`), the mesh
  spans every process's devices and each process feeds its own shard of the batch.
  """
  parallel = 'jit'

  def __init__(self, devices: list | None = None):
    self.mesh = Mesh(np.asarray(devices or jax.devices()), ('data',))
    self.replicated = NamedSharding(self.mesh, P())
    self.sharded = NamedSharding(self.mesh, P('data'))

  @property
  def num_devices(self) -> int:
    return self.mesh.size

  def init(self, init_fn, rng: jax.Array, batch: Batch) -> TrainState:
    abstract = jax.eval_shape(init_fn, rng, batch)
    out = jax.tree.map(lambda _: self.replicated, abstract)
    return jax.jit(init_fn, out_shardings=out, compiler_options=_init_compiler_options())(rng, batch)

  def abstract_state(self, init_fn, rng: jax.Array, batch: Batch) -> TrainState:
    """The state's shapes, dtypes and shardings: the target of a checkpoint restore."""
    abstract = jax.eval_shape(init_fn, rng, batch)
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=self.replicated), abstract)

  def compile(self, train_step) -> Callable:
    return jax.jit(train_step, in_shardings=(self.replicated, self.sharded),
                   out_shardings=(self.replicated, self.replicated), donate_argnums=(0,))

  def put_batch(self, batch: Mapping[str, np.ndarray]) -> Batch:
    """The batch as the compiled step takes it."""
    return self.shard(batch)

  def shard(self, batch: Mapping[str, np.ndarray]) -> Batch:
    """Places this process's part of a global batch on the mesh, split over 'data'."""
    n, i = jax.process_count(), jax.process_index()
    def put(x):
      local = np.split(x, n)[i] if n > 1 else x
      return jax.make_array_from_process_local_data(self.sharded, local)
    return {k: put(v) for k, v in batch.items()}

  def put_state(self, state: TrainState) -> TrainState:
    return jax.device_put(state, self.replicated)

  def host_state(self, state: TrainState) -> TrainState:
    """The state as one copy (what checkpoints and evaluation take)."""
    return state

  def metrics(self, metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


class PmapRunner(JitRunner):
  """Compiles the same step with `jax.pmap`: state replicated per device, batch split."""
  parallel = 'pmap'

  def __init__(self, devices: list | None = None):
    super().__init__(devices)
    self.devices = list(self.mesh.devices.flat)

  def init(self, init_fn, rng, batch):
    return self.put_state(jax.jit(init_fn, compiler_options=_init_compiler_options())(rng, batch))

  def compile(self, train_step) -> Callable:
    return jax.pmap(train_step, axis_name='data', devices=self.devices, donate_argnums=(0,))

  def put_batch(self, batch):
    """Splits the batch into a leading device axis, [n, B/n, ...], one slice per device."""
    n = len(self.devices)
    return {k: jax.device_put(v.reshape(n, -1, *v.shape[1:]), self.sharded) for k, v in batch.items()}

  def put_state(self, state):
    """One copy of the state per device, stacked on a leading device axis."""
    n = len(self.devices)
    return jax.tree.map(
        lambda x: jax.device_put(jnp.broadcast_to(x[None], (n, *x.shape)), self.sharded), state)

  def host_state(self, state):
    return jax.device_put(jax.tree.map(lambda x: x[0], state), self.replicated)

  def metrics(self, metrics):
    return {k: float(v[0]) for k, v in jax.device_get(metrics).items()}


def make_runner(parallel: str, batch_size: int, devices: list | None = None) -> JitRunner:
  """The runner for `--parallel`, after checking the batch splits over the devices."""
  if parallel == 'pmap' and jax.process_count() > 1:
    raise ConfigError('--parallel=pmap runs in one process; with several (--num_processes), '
                      'use --parallel=jit.')
  runner = PmapRunner(devices) if parallel == 'pmap' else JitRunner(devices)
  if batch_size % runner.num_devices:
    raise ConfigError(f'--batch_size={batch_size} must be a multiple of the number of devices '
                      f'({runner.num_devices}).')
  return runner

