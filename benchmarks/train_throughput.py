"""Training throughput of the harness's own compiled step, one JSON line per config.

  python benchmarks/train_throughput.py                       # every config, fp32 and bf16
  python benchmarks/train_throughput.py --only=pixelcnn_15x16 --dtypes=float32 --steps=5
  python benchmarks/train_throughput.py --peak_tflops=989     # adds MFU (H100 SXM, dense bf16)
  python benchmarks/train_throughput.py --dtypes=float32 --matmul_precision=highest

Each line: {model, config, batch, dtype, device, step_ms, img_per_s, peer_img_per_s,
tflops_per_s, temp_mb, precision} (and `mfu` with --peak_tflops; flow configs add
`sample_ms`, one compiled sampling call of a whole batch). `temp_mb` is XLA's buffer
assignment for the step's temporaries: its working memory beyond the state and
batch. A config that fails prints {config, dtype,
device, error} and the rest still run; the exit status is then 1. FLOPs per step are XLA's own count of the
compiled step (`cost_analysis`), so `tflops_per_s` is what the step's arithmetic
reached, not an estimate from a formula.

`--matmul_precision` sets JAX's default precision of float32 matrix products and
convolutions. At 'default' a GPU with tensor cores may compute them in TF32 (10-bit
mantissa inputs); 'highest' keeps full float32, as PyTorch does for its matrix products
by default (it allows TF32 in cuDNN convolutions). State which one a figure used.

Inputs are random 28x28x1 images: binary for the autoregressive models, the shapes at
which the PyTorch peer (pytorch-generative) was measured on one H100 in fp32 (its img/s
is `peer_img_per_s`): PixelCNN 15 blocks x 16 residual channels (32 in the stack) at batch
256 -> 19,412 img/s; 15 x 128 (256) at batch 128 -> 3,903; MADE 784-8000-784 at batch 64
-> 1,608; Gated PixelCNN 10 gated layers x 128 at batch 128 -> 2,130; PixelSNAIL 64
channels, 8 blocks x 2 residual, value 32 / key 4 at batch 128 -> 1,714; ImageGPT 8
blocks, 2 heads, width 64 at batch 64 -> 1,187. The flows (RealNVP, Glow) model 256-level
images at batch 64 and have no peer figure.
"""

import json
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np

from dulx import data
from dulx import models
from dulx import train

_ONLY = flags.DEFINE_list('only', [], 'Config names to run (default: all).')
_DTYPES = flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'Compute dtypes to run.')
_STEPS = flags.DEFINE_integer('steps', 50, 'Timed steps per config.')
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Untimed steps (compilation) per config.')
_PEAK = flags.DEFINE_float('peak_tflops', None, "The device's peak TFLOP/s, for MFU.")
_PRECISION = flags.DEFINE_enum('matmul_precision', 'default', ['default', 'high', 'highest'],
                               'JAX default precision of float32 matrix products and convolutions.')

# name -> (model, options, batch size, levels, peer fp32 img/s on one H100 or None).
CONFIGS = {
    'pixelcnn_15x16': ('pixelcnn', dict(num_residual_blocks=15, residual_channels=16,
                                        stack_channels=32, head_channels=32), 256, 2, 19412),
    'pixelcnn_15x128': ('pixelcnn', dict(num_residual_blocks=15, residual_channels=128,
                                         stack_channels=256, head_channels=256), 128, 2, 3903),
    'made_784-8000-784': ('made', dict(hidden_sizes=[8000]), 64, 2, 1608),
    'gated_pixelcnn_10x128': ('gated_pixelcnn', dict(num_layers=10, channels=128,
                                                     skip_channels=128, head_channels=32),
                              128, 2, 2130),
    'pixelsnail_8x64': ('pixelsnail', dict(num_blocks=8, num_residual=2, channels=64,
                                           key_channels=4, value_channels=32), 128, 2, 1714),
    'imagegpt_8x64': ('imagegpt', dict(num_layers=8, embed_dim=64, num_heads=2), 64, 2, 1187),
    'realnvp_2x64': ('realnvp', dict(num_scales=2, hidden=64, num_blocks=2), 64, 256, None),
    'glow_2x8x128': ('glow', dict(num_scales=2, steps_per_scale=8, hidden=128), 64, 256, None),
    # The same Glow with each scale's 8 steps unrolled (the default on a CPU, rolled elsewhere).
    'glow_2x8x128_unrolled': ('glow', dict(num_scales=2, steps_per_scale=8, hidden=128,
                                           scan_unroll=8), 64, 256, None),
    # PixelSNAIL and ImageGPT as above, each attention's weights recomputed in the backward
    # pass (`remat_attention`); compare their temp_mb.
    'pixelsnail_8x64_remat': ('pixelsnail', dict(num_blocks=8, num_residual=2, channels=64,
                                                 key_channels=4, value_channels=32,
                                                 remat_attention=True), 128, 2, 1714),
    'imagegpt_8x64_remat': ('imagegpt', dict(num_layers=8, embed_dim=64, num_heads=2,
                                             remat_attention=True), 64, 2, 1187),
}

_SHAPE = (28, 28, 1)


def _flops(compiled) -> float | None:
  """XLA's FLOP count of one call of a compiled function, or None where it gives none."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  flops = (analysis or {}).get('flops')
  return float(flops) if flops and flops > 0 else None


def _temp_bytes(compiled) -> int | None:
  """XLA's buffer assignment for a compiled function's temporaries (neither its
  arguments nor its outputs), or None where the backend gives none."""
  try:
    analysis = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  # An optional figure: never fail a config on it.
    return None
  return getattr(analysis, 'temp_size_in_bytes', None)


def _time(fn, args_of_call, steps: int, warmup: int) -> float:
  """Seconds per call of fn(*args_of_call(i)) after `warmup` untimed calls."""
  out = None
  for i in range(warmup):
    out = fn(*args_of_call(i))
  jax.block_until_ready(out)
  start = time.perf_counter()
  for i in range(steps):
    out = fn(*args_of_call(warmup + i))
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / steps


def measure(model_name: str, options: dict, batch_size: int, num_levels: int, dtype: str,
            steps: int, warmup: int) -> dict:
  """The step time (and FLOPs, and for flows the sampling time) of one config."""
  info = data.DatasetInfo(spec='random', split='train', shape=_SHAPE, num_levels=num_levels,
                          num_classes=None)
  config = train.Config(model=model_name, model_options=options, batch_size=batch_size, dtype=dtype)
  model = models.build_model(model_name, info, options, dtype=jax.numpy.dtype(dtype))
  tx, schedule = train.make_optimizer(config)
  runner = train.make_runner('jit', batch_size, jax.devices()[:1])
  rng = np.random.default_rng(0)
  batches = [runner.put_batch({'x': rng.integers(0, num_levels, (batch_size, *_SHAPE),
                                                 dtype=np.int32)}) for _ in range(2)]
  state = runner.init(train.make_init_fn(model, tx, 0.0), jax.random.PRNGKey(0),
                      jax.device_get(batches[0]))
  train_step = train.make_train_step(train.likelihood_loss(model, int(np.prod(_SHAPE))), tx,
                                     schedule)
  # Compiled once, ahead of time: the same executable is timed and its FLOPs counted.
  step = runner.compile(train_step).lower(state, batches[0]).compile()
  result = {'flops': _flops(step), 'temp_bytes': _temp_bytes(step)}
  holder = {'state': state}

  def one_step(batch):
    holder['state'], metrics = step(holder['state'], batch)
    return metrics

  result['seconds'] = _time(one_step, lambda i: (batches[i % 2],), steps, warmup)
  if callable(getattr(model, 'sample', None)):  # Models that sample directly (the flows).
    variables = holder['state'].variables()
    draw = jax.jit(lambda key: model.apply(variables, key, batch_size, method='sample'))
    result['sample_seconds'] = _time(draw, lambda i: (jax.random.PRNGKey(i),),
                                     max(1, steps // 5), 1)
  return result


def main(argv):
  del argv
  jax.config.update('jax_default_matmul_precision', _PRECISION.value)
  device = f'{jax.devices()[0].platform}:{jax.devices()[0].device_kind}'
  unknown = sorted(set(_ONLY.value) - set(CONFIGS))
  if unknown:
    raise app.UsageError(f'unknown config(s) {", ".join(unknown)}; known: {", ".join(CONFIGS)}.')
  failed = False
  for name, (model_name, options, batch, levels, peer) in CONFIGS.items():
    if _ONLY.value and name not in _ONLY.value:
      continue
    for dtype in _DTYPES.value:
      try:
        result = measure(model_name, options, batch, levels, dtype, _STEPS.value, _WARMUP.value)
      except Exception as e:  # pylint: disable=broad-except  # One config's failure is reported, not fatal.
        failed = True
        print(json.dumps({'config': name, 'dtype': dtype, 'device': device,
                          'error': f'{type(e).__name__}: {e}'[:500]}), flush=True)
        continue
      seconds = result['seconds']
      line = {'model': model_name, 'config': name, 'batch': batch, 'dtype': dtype,
              'device': device, 'precision': _PRECISION.value,
              'step_ms': round(seconds * 1e3, 3),
              'img_per_s': round(batch / seconds, 1), 'peer_img_per_s': peer}
      if result['flops']:
        line['tflops_per_s'] = round(result['flops'] / seconds / 1e12, 4)
        if _PEAK.value:
          line['mfu'] = round(result['flops'] / seconds / 1e12 / _PEAK.value, 4)
      if result['temp_bytes'] is not None:
        line['temp_mb'] = round(result['temp_bytes'] / 2**20, 1)
      if 'sample_seconds' in result:
        line['sample_ms'] = round(result['sample_seconds'] * 1e3, 3)
      print(json.dumps(line), flush=True)
  if failed:
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
