"""MaskedConv2D implementations ('xla', 'taps') compared on the current device, JSON lines.

  python benchmarks/conv_impl.py                          # every layer and model below
  python benchmarks/conv_impl.py --only=layers --reps=5   # the single layers only

Each line: {op, impl, kernel, mask, shape, features, fwd_ms, fwd_bwd_ms, device}.
op 'conv' is one layer on input `shape` [B, H, W, in] -> `features` maps; fwd_bwd
differentiates a scalar of its output w.r.t. the kernel, bias and input. op
'pixelcnn_*' is a whole PixelCNN on binary 28x28x1 images (`kernel`, `mask`: its
first layer): fwd computes log p(x), fwd_bwd also its gradient w.r.t. the parameters.
Times are the minimum over --reps calls after one compiling call (the least
disturbed by other load on the machine). The layers are the generic [256, 28, 28, 32]
3x3 'B' and 7x7 'A' probes and every layer of the two PixelCNN configs of
benchmarks/train_throughput.py; `dulx.nn.masked_conv._AUTO_IMPL` records the choice.
"""

import json
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from dulx.models.autoregressive.pixelcnn import PixelCNN
from dulx.nn.masked_conv import MaskedConv2D

_ONLY = flags.DEFINE_enum('only', 'all', ('all', 'layers', 'models'), 'What to measure.')
_IMPLS = flags.DEFINE_list('impls', ['xla', 'taps'], 'Implementations to compare.')
_REPS = flags.DEFINE_integer('reps', 5, 'Timed calls per measurement (the minimum is reported).')

# (input shape [B, H, W, in], features, kernel size, mask type).
LAYERS = (
    ((256, 28, 28, 32), 32, 3, 'B'),
    ((256, 28, 28, 32), 32, 7, 'A'),
    # PixelCNN 15 blocks x 16 residual (32 stack) channels, batch 256.
    ((256, 28, 28, 1), 32, 7, 'A'),
    ((256, 28, 28, 32), 16, 1, 'B'),
    ((256, 28, 28, 16), 16, 3, 'B'),
    ((256, 28, 28, 16), 32, 1, 'B'),
    # PixelCNN 15 blocks x 128 residual (256 stack) channels, batch 128.
    ((128, 28, 28, 1), 256, 7, 'A'),
    ((128, 28, 28, 256), 128, 1, 'B'),
    ((128, 28, 28, 128), 128, 3, 'B'),
    ((128, 28, 28, 128), 256, 1, 'B'),
)

# name -> (PixelCNN fields, batch size); as in benchmarks/train_throughput.py.
MODELS = {
    'pixelcnn_15x16': (dict(num_residual_blocks=15, residual_channels=16, stack_channels=32,
                            head_channels=32), 256),
    'pixelcnn_15x128': (dict(num_residual_blocks=15, residual_channels=128, stack_channels=256,
                             head_channels=256), 128),
}


def best_ms(fn, *args, reps: int) -> float:
  """Minimum wall time of fn(*args) over `reps` calls after a compiling call, in ms."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1e3 * min(times)


def layer_times(impl: str, shape: tuple[int, ...], features: int, kernel_size: int,
                mask_type: str, reps: int) -> tuple[float, float]:
  """(fwd_ms, fwd_bwd_ms) of one MaskedConv2D layer."""
  layer = MaskedConv2D(features, kernel_size, mask_type, impl=impl)
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  variables = layer.init(jax.random.PRNGKey(1), x)
  fwd = jax.jit(layer.apply)
  loss = lambda v, x: jnp.mean(jnp.square(layer.apply(v, x)))
  fwd_bwd = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  return best_ms(fwd, variables, x, reps=reps), best_ms(fwd_bwd, variables, x, reps=reps)


def model_times(impl: str, fields: dict, batch_size: int, reps: int) -> tuple[float, float]:
  """(fwd_ms, fwd_bwd_ms) of a Bernoulli PixelCNN's log p(x) on binary 28x28x1 images."""
  model = PixelCNN(event_shape=(28, 28, 1), num_levels=2, likelihood='bernoulli',
                   conv_impl=impl, **fields)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 2, (batch_size, 28, 28, 1)), jnp.int32)
  params = model.init(jax.random.PRNGKey(0), x)['params']
  log_prob = lambda p, x: model.apply({'params': p}, x, method='log_prob')
  fwd = jax.jit(log_prob)
  fwd_bwd = jax.jit(jax.value_and_grad(lambda p, x: -jnp.mean(log_prob(p, x))))
  return best_ms(fwd, params, x, reps=reps), best_ms(fwd_bwd, params, x, reps=reps)


def main(argv):
  del argv
  device = f'{jax.devices()[0].platform}:{jax.devices()[0].device_kind}'

  def emit(**record):
    record.update(fwd_ms=round(record['fwd_ms'], 2), fwd_bwd_ms=round(record['fwd_bwd_ms'], 2),
                  device=device)
    print(json.dumps(record), flush=True)

  if _ONLY.value in ('all', 'layers'):
    for shape, features, kernel_size, mask_type in LAYERS:
      for impl in _IMPLS.value:
        fwd, fwd_bwd = layer_times(impl, shape, features, kernel_size, mask_type, _REPS.value)
        emit(op='conv', impl=impl, kernel=kernel_size, mask=mask_type, shape=list(shape),
             features=features, fwd_ms=fwd, fwd_bwd_ms=fwd_bwd)
  if _ONLY.value in ('all', 'models'):
    for name, (fields, batch_size) in MODELS.items():
      for impl in _IMPLS.value:
        fwd, fwd_bwd = model_times(impl, fields, batch_size, _REPS.value)
        emit(op=name, impl=impl, kernel=7, mask='A', shape=[batch_size, 28, 28, 1],
             features=fields['stack_channels'], fwd_ms=fwd, fwd_bwd_ms=fwd_bwd)


if __name__ == '__main__':
  app.run(main)
