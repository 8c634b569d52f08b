"""Where metrics go: append-only `metrics.jsonl`, TensorBoard events, the console."""

import json
import math
import os

import tensorboardX

from dulx.errors import CheckpointError

__all__ = ['MetricWriter', 'read_metrics']


def read_metrics(path: str) -> list[dict]:
  """The records of a `metrics.jsonl`, one dict per line, in file order.

  A last line cut short (no newline, not JSON) is the torn write of a run killed
  mid-record, and is left out: a resumed run writes that step again. Any other line
  that is not a record raises a CheckpointError naming it.
  """
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = f.read().split('\n')
  records = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      if number == len(lines):  # The last line, with no newline after it.
        break
      reason = str(e)
    else:
      if isinstance(record, dict) and isinstance(record.get('step'), int):
        records.append(record)
        continue
      reason = 'no integer "step"'
    raise CheckpointError(f'{path}, line {number}, is not a metrics record ({reason}); '
                          'mend or remove that line, or use another --workdir.')
  return records


def _cut_torn_line(path: str) -> None:
  """Cuts a torn last line back to the last newline, or ends a whole last record."""
  if not os.path.exists(path):
    return
  with open(path, 'rb+') as f:
    data = f.read()
    if not data or data.endswith(b'\n'):
      return
    tail = data[data.rfind(b'\n') + 1:]
    try:
      json.loads(tail)
    except ValueError:
      f.truncate(len(data) - len(tail))
    else:
      f.write(b'\n')


class MetricWriter:
  """Writes one JSON object per logged step: `{"step": s, "loss": ..., "eval/bits_per_dim": ...}`.

  The file is append-only. A resumed run recomputes the steps after its last
  checkpoint identically, so records for steps already in the file are skipped
  rather than written twice, and the torn last line of a killed run is cut off.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    records = read_metrics(self.path)
    self._last_step = max((r['step'] for r in records), default=-1)
    _cut_torn_line(self.path)
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
