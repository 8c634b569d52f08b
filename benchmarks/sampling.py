"""Autoregressive sampling speed, naive against cached, one JSON line per (config, method).

  python benchmarks/sampling.py                                   # every config below
  python benchmarks/sampling.py --only=imagegpt_2x32,pixelsnail_2x32 --num=4   # small, CPU
  python benchmarks/sampling.py --only=gated_pixelcnn,wavenet     # registry models by name

Each line: {model, config, method, n, height, width, seconds, device}: the wall time of
one compiled call of `dulx.sampling.sample(model, variables, rng, n, method=...)` that
draws n binary height x width images (the fastest of --repeats calls, after one call
that compiles). Models run at random parameters: sampling cost does not depend on them.
A (config, method) that fails prints its line with `error` in place of `seconds`, the rest
still run, and the exit status is then 1.

The configs are CONFIGS (a model at given options) and, by discovery, every registered
model that builds for binary height x width x 1 images at its default options and has a
cached decode step (`dulx.sampling.autoregressive.supports_cache`), under its own name.
"""

import json
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp

from dulx import data
from dulx import models
from dulx import sampling
from dulx.errors import ConfigError

_ONLY = flags.DEFINE_list('only', [], 'Config names to run (default: all).')
_METHODS = flags.DEFINE_list('methods', ['naive', 'cached'], 'Sampling methods to time.')
_NUM = flags.DEFINE_integer('num', 16, 'Samples drawn per call (n).')
_HEIGHT = flags.DEFINE_integer('height', 28, 'Image height.')
_WIDTH = flags.DEFINE_integer('width', 28, 'Image width.')
_REPEATS = flags.DEFINE_integer('repeats', 2, 'Timed calls per config and method (the fastest counts).')

# name -> (model, options). The *_8x64 configs are the PyTorch peer's training shapes
# (ImageGPT: 8 blocks, 2 heads, width 64; PixelSNAIL: 8 blocks of 2 residual blocks, 64
# channels, 4 key and 32 value channels); the *_2x32 ones and pixelcnn_pp_32x2 (the
# default PixelCNN++ is 160 filters x 5 blocks, some 20 minutes of naive sampling on a
# 2-core CPU) sizes that a CPU samples naively in minutes.
CONFIGS = {
    'imagegpt_8x64': ('imagegpt', dict(num_layers=8, embed_dim=64, num_heads=2)),
    'imagegpt_2x32': ('imagegpt', dict(num_layers=2, embed_dim=32, num_heads=2)),
    'pixelsnail_8x64': ('pixelsnail', dict(num_blocks=8, num_residual=2, channels=64,
                                           key_channels=4, value_channels=32)),
    'pixelsnail_2x32': ('pixelsnail', dict(num_blocks=2, num_residual=1, channels=32,
                                           key_channels=8, value_channels=16, head_channels=32)),
    'pixelcnn_pp_32x2': ('pixelcnn_pp', dict(num_filters=32, num_resnet=2, num_scales=3)),
}


def _discovered(info: data.DatasetInfo) -> dict[str, tuple[str, dict]]:
  """Registry models with a cached decode step, at default options, not already in CONFIGS."""
  named = {model for model, _ in CONFIGS.values()}
  found = {}
  for name in models.names():
    if name in named:
      continue
    try:
      model = models.build_model(name, info, {})
    except ConfigError as e:
      logging.info('skipping %s: %s', name, e)
      continue
    if sampling.autoregressive.supports_cache(model):
      found[name] = (name, {})
  return found


def measure(model, method: str, num: int, repeats: int) -> float:
  """Seconds of the fastest of `repeats` compiled sampling calls (after a compiling call)."""
  x = jnp.zeros((1, *model.event_shape), jnp.int32)
  y = None if model.num_classes is None else jnp.zeros([1], jnp.int32)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x, y)
  draw = lambda seed: sampling.sample(model, variables, jax.random.PRNGKey(seed), num,
                                      method=method)
  jax.block_until_ready(draw(0))
  times = []
  for seed in range(1, repeats + 1):
    start = time.perf_counter()
    jax.block_until_ready(draw(seed))
    times.append(time.perf_counter() - start)
  return min(times)


def main(argv):
  del argv
  device = f'{jax.devices()[0].platform}:{jax.devices()[0].device_kind}'
  info = data.DatasetInfo(spec='random', split='train', shape=(_HEIGHT.value, _WIDTH.value, 1),
                          num_levels=2, num_classes=None)
  configs = {**CONFIGS, **_discovered(info)}
  unknown = sorted(set(_ONLY.value) - set(configs))
  if unknown:
    raise app.UsageError(f'unknown config(s) {", ".join(unknown)}; known: {", ".join(configs)}.')
  failed = False
  for name, (model_name, options) in configs.items():
    if _ONLY.value and name not in _ONLY.value:
      continue
    model = models.build_model(model_name, info, options)
    for method in _METHODS.value:
      if method == 'cached' and not sampling.autoregressive.supports_cache(model):
        continue
      line = {'model': model_name, 'config': name, 'method': method, 'n': _NUM.value,
              'height': _HEIGHT.value, 'width': _WIDTH.value, 'device': device}
      try:
        line['seconds'] = round(measure(model, method, _NUM.value, _REPEATS.value), 4)
      except Exception as e:  # pylint: disable=broad-except  # One config's failure is reported, not fatal.
        failed = True
        line['error'] = f'{type(e).__name__}: {e}'[:500]
      print(json.dumps(line), flush=True)
  if failed:
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
