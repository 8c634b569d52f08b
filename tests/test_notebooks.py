"""The notebooks run top to bottom, at tiny sizes, and their checks hold.

Each notebook's code cells run in order in one namespace, as a kernel would run them.
The values of the cell tagged 'parameters' are then replaced by the test's (the
convention of papermill), so a notebook keeps its real sizes and the test its small ones.
"""

import json
import math
import pathlib

import numpy as np

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / 'notebooks'


def run_notebook(name: str, **parameters) -> dict:
  """Executes notebooks/<name>'s code cells with `parameters` overriding its parameters cell."""
  cells = json.loads((NOTEBOOKS / name).read_text())['cells']
  tagged = [c for c in cells if 'parameters' in c['metadata'].get('tags', [])]
  assert len(tagged) == 1, f'{name} needs exactly one cell tagged "parameters"'
  namespace = {'__name__': '__main__'}
  for i, cell in enumerate(cells):
    if cell['cell_type'] != 'code':
      continue
    exec(compile(''.join(cell['source']), f'{name}, cell {i}', 'exec'), namespace)
    if cell is tagged[0]:
      unknown = set(parameters) - set(namespace)
      assert not unknown, f'{name} has no parameters {sorted(unknown)}'
      namespace.update(parameters)
  return namespace


def _bits_per_dim(history: list[dict]) -> list[float]:
  return [record['bits_per_dim'] for record in history]


def test_autoregressive(tmp_path):
  ns = run_notebook('autoregressive.ipynb', WORKDIR=str(tmp_path / 'run'), NUM_STEPS=30,
                    NUM_LAYERS=2, CHANNELS=8, BATCH_SIZE=32)
  curve = _bits_per_dim(ns['history'])
  assert len(curve) == 6 and curve[-1] < curve[0] - 0.3, curve
  assert ns['final']['bits_per_dim'] < math.log2(17) - 0.5  # Far better than uniform levels.
  assert ns['moved'][ns['k'] + 1:].any()  # The changed pixel reaches later outputs.
  assert ns['agreement'] == 1.0  # Naive and cached samplers draw the same images.
  assert ns['completed'].shape == (90, 8, 8, 1)


def test_flows(tmp_path):
  ns = run_notebook('flows.ipynb', WORKDIR=str(tmp_path / 'realnvp'), TOY_WORKDIR=str(tmp_path / 'maf'),
                    NUM_STEPS=30, TOY_STEPS=30, HIDDEN=8, BATCH_SIZE=32)
  curve = _bits_per_dim(ns['history'])
  assert len(curve) == 6 and curve[-1] < curve[0] - 0.3, curve
  assert ns['final']['bits_per_dim'] < math.log2(17) - 0.5  # Far better than uniform levels.
  assert ns['error'] < 1e-4 and ns['logdet_sum'] < 1e-3  # The notebook's checks, tighter on a CPU.
  assert {t: s.shape for t, s in ns['samples'].items()} == {1.0: (50, 8, 8, 1), 0.7: (50, 8, 8, 1)}
  assert np.isfinite(ns['log_density']).all()


def test_every_notebook_is_tested():
  tested = {name.removeprefix('test_') + '.ipynb' for name in globals() if name.startswith('test_')
            and name != 'test_every_notebook_is_tested'}
  assert {path.name for path in NOTEBOOKS.glob('*.ipynb')} == tested
