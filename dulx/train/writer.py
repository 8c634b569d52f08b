"""Where metrics go: append-only `metrics.jsonl`, TensorBoard events, the console."""

import json
import math
import os

import tensorboardX

__all__ = ['MetricWriter', 'read_metrics']


def read_metrics(path: str) -> list[dict]:
  """The records of a `metrics.jsonl`, one dict per line, in file order."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class MetricWriter:
  """Writes one JSON object per logged step: `{"step": s, "loss": ..., "eval/bits_per_dim": ...}`.

  The file is append-only. A resumed run recomputes the steps after its last
  checkpoint identically, so records for steps already in the file are skipped
  rather than written twice.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    records = read_metrics(self.path)
    self._last_step = max((r['step'] for r in records), default=-1)
    self._file = open(self.path, 'a')
    self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if step <= self._last_step:
      return
    self._last_step = step
    record = {'step': step, **{k: (v if math.isfinite(v) else str(v)) for k, v in metrics.items()}}
    self._file.write(json.dumps(record) + '\n')
    self._file.flush()
    for k, v in metrics.items():
      self._tb.add_scalar(k, v, step)

  def close(self) -> None:
    self._file.close()
    self._tb.close()
