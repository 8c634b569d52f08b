"""Training throughput of the harness's own compiled step, one JSON line per config.

  python benchmarks/train_throughput.py                       # every config, fp32 and bf16
  python benchmarks/train_throughput.py --only=pixelcnn_15x16 --dtypes=float32 --steps=5

Each line: {model, config, batch, dtype, device, step_ms, img_per_s}. Inputs are random
binary 28x28x1 images, the shapes at which the PyTorch peer (pytorch-generative) was
measured on one H100 in fp32: PixelCNN 15 blocks x 16 residual channels (32 in the stack)
at batch 256 -> 19,412 img/s; 15 x 128 (256) at batch 128 -> 3,903 img/s; MADE
784-8000-784 at batch 64 -> 1,608 img/s.
"""

import json
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

# name -> (model, options, batch size, peer fp32 img/s on one H100).
CONFIGS = {
    'pixelcnn_15x16': ('pixelcnn', dict(num_residual_blocks=15, residual_channels=16,
                                        stack_channels=32, head_channels=32), 256, 19412),
    'pixelcnn_15x128': ('pixelcnn', dict(num_residual_blocks=15, residual_channels=128,
                                         stack_channels=256, head_channels=256), 128, 3903),
    'made_784-8000-784': ('made', dict(hidden_sizes=[8000]), 64, 1608),
}


def measure(model_name: str, options: dict, batch_size: int, dtype: str, steps: int,
            warmup: int) -> float:
  """Seconds per training step of the harness's jit-compiled step (after warm-up)."""
  info = data.DatasetInfo(spec='random', split='train', shape=(28, 28, 1), num_levels=2,
                          num_classes=None)
  config = train.Config(model=model_name, model_options=options, batch_size=batch_size, dtype=dtype)
  model = models.build_model(model_name, info, options, dtype=jax.numpy.dtype(dtype))
  tx, schedule = train.make_optimizer(config)
  runner = train.make_runner('jit', batch_size, jax.devices()[:1])
  rng = np.random.default_rng(0)
  batches = [runner.put_batch({'x': rng.integers(0, 2, (batch_size, 28, 28, 1), dtype=np.int32)})
             for _ in range(2)]
  state = runner.init(train.make_init_fn(model, tx, 0.0), jax.random.PRNGKey(0),
                      jax.device_get(batches[0]))
  step = runner.compile(train.make_train_step(train.likelihood_loss(model, 784), tx, schedule))
  for i in range(warmup):
    state, metrics = step(state, batches[i % 2])
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for i in range(steps):
    state, metrics = step(state, batches[i % 2])
  jax.block_until_ready((state, metrics))
  return (time.perf_counter() - start) / steps


def main(argv):
  del argv
  device = f'{jax.devices()[0].platform}:{jax.devices()[0].device_kind}'
  for name, (model_name, options, batch, _) in CONFIGS.items():
    if _ONLY.value and name not in _ONLY.value:
      continue
    for dtype in _DTYPES.value:
      seconds = measure(model_name, options, batch, dtype, _STEPS.value, _WARMUP.value)
      print(json.dumps({'model': model_name, 'config': name, 'batch': batch, 'dtype': dtype,
                        'device': device, 'step_ms': round(seconds * 1e3, 3),
                        'img_per_s': round(batch / seconds, 1)}), flush=True)


if __name__ == '__main__':
  app.run(main)
