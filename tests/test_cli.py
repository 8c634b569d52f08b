"""The experiment CLI end to end, in subprocesses as a user runs it.

Every bad input must give one line on stderr, no traceback, a non-zero exit, and
leave an existing workdir byte-identical.
"""

import fcntl
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.snapshot import snapshot

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MADE_FLAGS = ['--dataset=digits', '--train_split=train[:256]', '--eval_split=train[256:320]',
              '--binarize=threshold', '--hidden_sizes=16', '--batch_size=32', '--num_steps=4',
              '--eval_every=0', '--checkpoint_every=2', '--num_samples=4']


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, os.path.join(REPO, 'experiments', f'{script}.py'), *args],
                        cwd=REPO, capture_output=True, text=True, timeout=300)


def _last_json(stdout: str) -> dict:
  return json.loads(stdout.strip().splitlines()[-1])


def _records(workdir: str) -> list[dict]:
  """The run's metrics.jsonl records, less the wall-clock `examples_per_sec`."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [{k: v for k, v in json.loads(l).items() if k != 'examples_per_sec'} for l in f]


@pytest.fixture(scope='module')
def made_workdir(tmp_path_factory) -> str:
  workdir = str(tmp_path_factory.mktemp('cli') / 'made')
  result = _run('made', *MADE_FLAGS, f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr
  out = _last_json(result.stdout)
  assert out['step'] == 4 and np.isfinite(out['bits_per_dim']) and np.isfinite(out['nll'])
  return workdir


def _assert_clean_failure(result: subprocess.CompletedProcess, match: str) -> None:
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith('error: ') and match in lines[0], lines[0]


def test_train_writes_flags_and_resumes_from_them(made_workdir):
  with open(os.path.join(made_workdir, 'flags.txt')) as f:
    flagfile = f.read()
  assert '--hidden_sizes=16' in flagfile and '--binarize=threshold' in flagfile
  result = _run('made', f'--flagfile={os.path.join(made_workdir, "flags.txt")}', '--num_steps=6')
  assert result.returncode == 0, result.stderr
  assert _last_json(result.stdout)['step'] == 6


def test_eval_mode_prints_json(made_workdir):
  result = _run('made', '--mode=eval', f'--workdir={made_workdir}')
  assert result.returncode == 0, result.stderr
  out = _last_json(result.stdout)
  assert out['num_examples'] == 64
  assert out['bits_per_dim'] == pytest.approx(out['nll'] / (64 * np.log(2)))


def test_eval_mode_on_an_npz_file(made_workdir, tmp_path):
  rng = np.random.default_rng(0)
  path = tmp_path / 'small.npz'
  np.savez(path, x=rng.integers(0, 256, (10, 8, 8), dtype=np.uint8))
  result = _run('made', '--mode=eval', f'--workdir={made_workdir}', f'--dataset=npz:{path}',
                '--eval_split=train')
  assert result.returncode == 0, result.stderr
  out = _last_json(result.stdout)
  assert out['num_examples'] == 10 and np.isfinite(out['nll'])


def test_sample_mode_writes_png_and_npy(made_workdir, tmp_path):
  output = str(tmp_path / 'out')
  result = _run('made', '--mode=sample', f'--workdir={made_workdir}', '--num_samples=5',
                f'--output={output}')
  assert result.returncode == 0, result.stderr
  samples = np.load(output + '.npy')
  assert samples.shape == (5, 8, 8, 1) and set(np.unique(samples)) <= {0, 1}
  with open(output + '.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_sample_mode_completes_the_top_rows_of_other_images(made_workdir, tmp_path):
  from dulx import data  # The images as the run sees them: digits, thresholded.
  x = data.preprocess(data.load('digits', 'train[400:404]'), binarize='threshold').x
  output = str(tmp_path / 'completed')
  result = _run('made', '--mode=sample', f'--workdir={made_workdir}', '--num_samples=4',
                '--given_rows=3', '--eval_split=train[400:404]', f'--output={output}')
  assert result.returncode == 0, result.stderr
  completed = np.load(output + '.npy')
  np.testing.assert_array_equal(completed[:, :3], x[:, :3])
  with open(output + '.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_a_label_for_an_unconditional_model_fails_cleanly(made_workdir, tmp_path):
  before = snapshot(made_workdir)
  result = _run('made', '--mode=sample', f'--workdir={made_workdir}', '--label=3',
                f'--output={tmp_path / "out"}')
  _assert_clean_failure(result, '--label=3: this made is not class-conditional')
  assert snapshot(made_workdir) == before and not os.listdir(tmp_path)


def _corrupt_files(tmp_path):
  bad_gz = tmp_path / 'bad-images-idx3-ubyte.gz'
  with gzip.open(bad_gz, 'wb') as f:
    f.write(b'\x00\x00\x08\x03' + b'\x00' * 7)  # A header cut short.
  bad_npz = tmp_path / 'bad.npz'
  bad_npz.write_bytes(b'PK\x03\x04 this is not a zip archive')
  return bad_gz, bad_npz


@pytest.mark.parametrize('case', [
    'unknown_dataset', 'missing_file', 'corrupt_idx', 'corrupt_npz', 'split_out_of_range',
    'zero_batch', 'negative_steps', 'batch_larger_than_data', 'unknown_option', 'missing_flagfile',
    'bad_option_value', 'another_model', 'workdir_not_writable', 'weight_decay_without_adamw',
    'clipping_switched_on'])
def test_bad_input_fails_cleanly_and_leaves_workdir_identical(case, made_workdir, tmp_path):
  bad_gz, bad_npz = _corrupt_files(tmp_path)
  args = {
      'unknown_dataset': ('made', '--dataset=nosuch:thing'),
      'missing_file': ('made', '--dataset=idx:/nonexistent/t10k-images-idx3-ubyte.gz'),
      'corrupt_idx': ('made', f'--dataset=idx:{bad_gz}'),
      'corrupt_npz': ('made', f'--dataset=npz:{bad_npz}'),
      'split_out_of_range': ('made', '--train_split=train[:5000]'),
      'zero_batch': ('made', '--batch_size=0'),
      'negative_steps': ('made', '--num_steps=-5'),
      'batch_larger_than_data': ('made', '--batch_size=1024'),
      'unknown_option': ('made', '--no_such_option=3'),
      'missing_flagfile': ('made', '--flagfile=/nonexistent/made.flags'),
      'bad_option_value': ('made', '--likelihood=gaussian'),
      'another_model': ('histogram', '--quantize=4'),
      'workdir_not_writable': ('made',),
      'weight_decay_without_adamw': ('made', '--weight_decay=0.1'),
      'clipping_switched_on': ('made', '--grad_clip=1'),
  }[case]
  script, extra = args[0], list(args[1:])
  workdir = made_workdir
  if case == 'workdir_not_writable':
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a directory')
    workdir = str(blocker / 'workdir')
  before = snapshot(made_workdir)
  flags = MADE_FLAGS if script == 'made' else []
  result = _run(script, *flags, f'--workdir={workdir}', '--num_steps=8', *extra)
  expected = {
      'unknown_dataset': 'nosuch:thing', 'missing_file': '/nonexistent/', 'corrupt_idx': 'bad-images',
      'corrupt_npz': 'bad.npz', 'split_out_of_range': '5000', 'zero_batch': 'batch_size',
      'negative_steps': 'num_steps', 'batch_larger_than_data': '1024', 'unknown_option': 'no_such_option',
      'missing_flagfile': 'error: Unable to open flagfile',
      'bad_option_value': 'likelihood', 'another_model': "model 'made'",
      'workdir_not_writable': 'a_file', 'weight_decay_without_adamw': 'optimizer=adamw',
      'clipping_switched_on': 'resume with --grad_clip=0.0',
  }[case]
  _assert_clean_failure(result, expected)
  assert snapshot(made_workdir) == before


@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_corrupt_checkpoint_fails_cleanly(made_workdir, tmp_path, mode):
  workdir = str(tmp_path / 'copy')
  shutil.copytree(made_workdir, workdir)
  checkpoints = os.path.join(workdir, 'checkpoints')
  latest = max(os.listdir(checkpoints), key=int)
  for directory, _, files in os.walk(os.path.join(checkpoints, latest)):
    for name in files:
      with open(os.path.join(directory, name), 'wb') as f:
        f.write(b'garbage')
  before = snapshot(workdir)
  result = _run('made', *MADE_FLAGS, f'--workdir={workdir}', f'--mode={mode}', '--num_steps=8')
  _assert_clean_failure(result, 'checkpoint')
  assert snapshot(workdir) == before


def test_eval_of_an_empty_workdir_fails_cleanly(tmp_path):
  result = _run('made', '--mode=eval', f'--workdir={tmp_path / "nothing"}')
  _assert_clean_failure(result, 'no trained run')
  assert not os.path.exists(tmp_path / 'nothing')


def test_eval_on_data_of_another_shape_fails_cleanly(made_workdir, tmp_path):
  path = tmp_path / 'big.npz'
  np.savez(path, x=np.zeros((5, 28, 28), np.uint8))
  before = snapshot(made_workdir)
  result = _run('made', '--mode=eval', f'--workdir={made_workdir}', f'--dataset=npz:{path}',
                '--eval_split=train')
  _assert_clean_failure(result, 'shape')
  assert snapshot(made_workdir) == before


def test_sigterm_checkpoints_and_resume_equals_uninterrupted(tmp_path):
  flags = [*MADE_FLAGS, '--num_steps=600', '--checkpoint_every=0', '--log_every=1',
           '--eval_every=0']
  killed, whole = str(tmp_path / 'killed'), str(tmp_path / 'whole')
  process = subprocess.Popen(
      [sys.executable, os.path.join(REPO, 'experiments', 'made.py'), *flags, f'--workdir={killed}'],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  metrics = os.path.join(killed, 'metrics.jsonl')
  deadline = time.monotonic() + 240
  while time.monotonic() < deadline and process.poll() is None:
    if os.path.exists(metrics) and len(open(metrics).readlines()) >= 5:
      break
    time.sleep(0.05)
  process.send_signal(signal.SIGTERM)
  process.communicate(timeout=120)
  assert process.returncode == 128 + signal.SIGTERM
  (stopped_at,) = os.listdir(os.path.join(killed, 'checkpoints'))
  assert 5 <= int(stopped_at) < 600
  resumed = _run('made', *flags, f'--workdir={killed}')
  assert resumed.returncode == 0, resumed.stderr
  uninterrupted = _run('made', *flags, f'--workdir={whole}')
  assert uninterrupted.returncode == 0, uninterrupted.stderr
  assert _last_json(resumed.stdout)['nll'] == _last_json(uninterrupted.stdout)['nll']
  assert _records(killed) == _records(whole)
  assert [r['step'] for r in _records(killed)] == list(range(1, 601))


def _run_processes(script: str, *args: str, n: int = 2) -> list[subprocess.CompletedProcess]:
  """Runs `script` as `n` processes of one jax.distributed job (CPU collectives over gloo)."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  env = {**os.environ, 'JAX_CPU_COLLECTIVES_IMPLEMENTATION': 'gloo'}
  commands = [[sys.executable, os.path.join(REPO, 'experiments', f'{script}.py'), *args,
               f'--num_processes={n}', f'--process_id={i}', f'--coordinator_address=localhost:{port}']
              for i in range(n)]
  processes = [subprocess.Popen(c, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for c in commands]
  outputs = [p.communicate(timeout=300) for p in processes]
  return [subprocess.CompletedProcess(c, p.returncode, *out)
          for c, p, out in zip(commands, processes, outputs)]


def test_two_processes_train_as_one(tmp_path):
  """`--num_processes=2`: each process feeds half of every batch, and the run equals a
  one-process run; process 0 alone writes the run's files, so every step is logged
  once. Sampling in two processes draws what one process draws."""
  flags = [*MADE_FLAGS, '--num_steps=4', '--log_every=1', '--eval_every=2', '--sample_every=4']
  one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
  single = _run('made', *flags, f'--workdir={one}')
  assert single.returncode == 0, single.stderr
  both = _run_processes('made', *flags, f'--workdir={two}')
  for p in both:
    assert p.returncode == 0, p.stderr
  assert [r['step'] for r in _records(two)] == [1, 2, 3, 4]
  for got, want in zip(_records(two), _records(one)):
    assert got.keys() == want.keys()
    # Float sums over 8 devices instead of 4: the same numbers up to round-off.
    np.testing.assert_allclose([got[k] for k in want], [want[k] for k in want], rtol=1e-5)
  finals = [_last_json(p.stdout)['nll'] for p in both]
  assert finals[0] == finals[1] == pytest.approx(_last_json(single.stdout)['nll'], rel=1e-5)
  assert os.listdir(os.path.join(two, 'samples')) == ['step_00000004.png']

  sample = [f'--workdir={two}', '--mode=sample', '--num_samples=6', '--seed=3']
  alone = _run('made', *sample, f'--output={tmp_path / "alone"}')
  assert alone.returncode == 0, alone.stderr
  both = _run_processes('made', *sample)
  for p in both:
    assert p.returncode == 0, p.stderr
  written = _last_json(both[0].stdout)
  assert _last_json(both[1].stdout) == written
  np.testing.assert_array_equal(np.load(written['npy']), np.load(tmp_path / 'alone.npy'))


def test_a_held_workdir_stops_every_process(tmp_path):
  """Process 0 holds the workdir's lock for the job and tells the others whether it got it:
  a second training into a held workdir stops in every process, not in process 0 alone."""
  workdir = tmp_path / 'w'
  workdir.mkdir()
  with open(workdir / '.lock', 'w') as held:
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # As a training in progress holds it.
    both = _run_processes('made', *MADE_FLAGS, f'--workdir={workdir}')
  for p in both:
    assert p.returncode == 2, p.stderr
    assert 'is in use by another training run' in p.stderr
  assert os.listdir(workdir) == ['.lock']
