"""The harness: one compiled step, jit == pmap, resume == uninterrupted, NaN guard, outputs."""

import errno
import fcntl
import json
import os
import shutil

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dulx
from dulx import data
from dulx import models
from dulx import train
from dulx.train import loop
from dulx.errors import CheckpointError, ConfigError, DivergedError
from tests.snapshot import snapshot

_NON_DETERMINISTIC = ('examples_per_sec',)


def _histogram_config(**kw) -> train.Config:
  base = dict(model='histogram', dataset='toy2d:two_moons', train_split='train[:2000]',
              eval_split='test[:500]', quantize=8, batch_size=64, num_steps=6, log_every=1,
              eval_every=3, checkpoint_every=3, sample_every=0, num_samples=16, learning_rate=0.05)
  return train.Config(**{**base, **kw})


def _made_config(**kw) -> train.Config:
  base = dict(model='made', model_options={'hidden_sizes': [32], 'num_masks': 4},
              dataset='digits', train_split='train[:256]', eval_split='train[256:320]',
              binarize='threshold', batch_size=32, num_steps=3, learning_rate=1e-2)
  return train.Config(**{**base, **kw})


def _records(workdir):
  return [{k: v for k, v in r.items() if k not in _NON_DETERMINISTIC}
          for r in train.read_metrics(os.path.join(workdir, 'metrics.jsonl'))]


def _setup_step(config: train.Config, parallel: str):
  ds = data.preprocess(data.load(config.dataset, config.train_split), binarize=config.binarize)
  model = models.build_model(config.model, ds.info, config.model_options)
  tx, schedule = train.make_optimizer(config)
  runner = train.make_runner(parallel, config.batch_size)
  init_fn = train.make_init_fn(model, tx, config.ema_decay)
  loss_fn = train.likelihood_loss(model, int(np.prod(ds.info.shape)))
  step = train.make_train_step(loss_fn, tx, schedule, axis_name='data' if parallel == 'pmap' else None)
  batcher = data.Batcher(ds, config.batch_size, seed=0)
  return runner, init_fn, step, batcher


def test_adamw_decays_the_weights_and_adam_refuses_weight_decay():
  config = _made_config(optimizer='adamw', weight_decay=0.5, learning_rate=0.1)
  tx, _ = train.make_optimizer(config)
  params = {'w': jnp.array([1.0, -2.0, 4.0])}
  # With zero gradients Adam's own step is 0, so the update is the decay alone: -lr wd w.
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  np.testing.assert_allclose(updates['w'], -0.1 * 0.5 * params['w'], rtol=1e-6)
  with pytest.raises(ConfigError, match='--weight_decay=0.5 needs --optimizer=adamw'):
    _made_config(weight_decay=0.5)


def test_four_fake_devices():
  assert jax.device_count() == 4


def test_train_step_traces_once():
  runner, init_fn, step, batcher = _setup_step(_made_config(), 'jit')
  state = runner.init(init_fn, jax.random.PRNGKey(0), batcher(0))
  compiled = runner.compile(chex.assert_max_traces(step, n=1))
  losses = []
  for s in range(4):
    state, metrics = compiled(state, runner.put_batch(batcher(s)))
    losses.append(runner.metrics(metrics)['loss'])
  assert int(state.step) == 4
  assert all(np.isfinite(losses))


def test_jit_and_pmap_give_the_same_update():
  config = _made_config()
  results = {}
  for parallel in ('jit', 'pmap'):
    runner, init_fn, step, batcher = _setup_step(config, parallel)
    state = runner.init(init_fn, jax.random.PRNGKey(0), batcher(0))
    compiled = runner.compile(step)
    history = []
    for s in range(3):
      state, metrics = compiled(state, runner.put_batch(batcher(s)))
      history.append(runner.metrics(metrics))
    results[parallel] = (jax.device_get(runner.host_state(state).params), history)
  chex.assert_trees_all_close(results['jit'][0], results['pmap'][0], rtol=1e-5, atol=1e-6)
  for m_jit, m_pmap in zip(results['jit'][1], results['pmap'][1]):
    for k in ('loss', 'grad_norm', 'param_norm'):
      np.testing.assert_allclose(m_jit[k], m_pmap[k], rtol=1e-5)
  # The update moved the parameters: the comparison above is not of two initial states.
  runner, init_fn, _, batcher = _setup_step(config, 'jit')
  initial = jax.device_get(runner.init(init_fn, jax.random.PRNGKey(0), batcher(0)).params)
  assert not np.allclose(jax.tree.leaves(initial)[0], jax.tree.leaves(results['jit'][0])[0])


@pytest.mark.parametrize('parallel', ['jit', 'pmap'])
def test_runner_init_is_the_init_fn_up_to_float_round_off(parallel):
  # The runners compile the init program at XLA's lowest optimisation level on a CPU
  # (it runs once); its draws may differ from an optimised build's in the last bit only.
  runner, init_fn, _, batcher = _setup_step(_made_config(), parallel)
  batch = batcher(0)
  state = jax.device_get(runner.host_state(runner.init(init_fn, jax.random.PRNGKey(0), batch)))
  expected = jax.device_get(jax.jit(init_fn)(jax.random.PRNGKey(0), batch))
  chex.assert_trees_all_equal_structs(state, expected)
  chex.assert_trees_all_close(state, expected, rtol=1e-6, atol=1e-7)  # float32 epsilon: 1.2e-7.


class _Penalised(nn.Module):
  """log p(x) = -|x - mu|^2 / 2 per example, sowing a penalty twice and a count once.

  A 'batch_stats' counter stands for model state that must survive beside the sown
  collections. (Unnormalised; the harness does not care.)
  """

  @nn.compact
  def log_prob(self, x, y=None, *, train=False):
    del y
    mu = self.param('mu', nn.initializers.constant(0.5), (x.shape[-1],))
    calls = self.variable('batch_stats', 'calls', lambda: jnp.zeros([]))
    if train:
      calls.value += 1
    self.sow('losses', 'penalty', 0.25 * jnp.sum(mu**2))
    self.sow('losses', 'penalty', 0.5 * jnp.sum(mu**2))
    self.sow('metrics', 'solver_steps', jnp.asarray(3, jnp.int32))
    return -0.5 * jnp.sum((x - mu)**2, axis=-1)

  def __call__(self, x, y=None, *, train=False):
    return self.log_prob(x, y, train=train)


@pytest.mark.parametrize('parallel', ['jit', 'pmap'])
def test_sown_penalties_join_the_loss_and_sown_metrics_are_reported(parallel):
  x = np.random.default_rng(0).standard_normal((8, 2)).astype(np.float32)
  model, tx = _Penalised(), optax.sgd(1.0)
  runner = train.make_runner(parallel, 8)
  state = runner.init(train.make_init_fn(model, tx, 0.0), jax.random.PRNGKey(0), {'x': x})
  host = jax.device_get(runner.host_state(state))
  assert set(host.model_state) == {'batch_stats'}, 'sown values are per pass, not state'
  step = train.make_train_step(train.likelihood_loss(model, 2), tx, optax.constant_schedule(1.0),
                               axis_name='data' if parallel == 'pmap' else None)
  state, metrics = runner.compile(step)(state, runner.put_batch({'x': x}))
  metrics = runner.metrics(metrics)
  mu = np.full(2, 0.5)
  nll = np.mean(0.5 * np.sum((x - mu)**2, axis=-1))
  penalty = 0.75 * np.sum(mu**2)  # Both sown values, summed.
  np.testing.assert_allclose(metrics['nll'], nll, rtol=1e-6)
  np.testing.assert_allclose(metrics['penalty'], penalty, rtol=1e-6)
  np.testing.assert_allclose(metrics['loss'], nll / 2 + penalty, rtol=1e-6)
  assert metrics['solver_steps'] == 3
  host = jax.device_get(runner.host_state(state))
  # One SGD step of rate 1 on nll / D + penalty: the penalty's gradient is in the update.
  gradient = np.mean(mu - x, axis=0) / 2 + 1.5 * mu
  np.testing.assert_allclose(host.params['mu'], mu - gradient, rtol=1e-5)
  assert set(host.model_state) == {'batch_stats'}
  assert float(host.model_state['batch_stats']['calls']) == 1.0


def test_resume_equals_uninterrupted(tmp_path):
  whole, parts = str(tmp_path / 'whole'), str(tmp_path / 'parts')
  train.train_and_evaluate(_histogram_config(num_steps=6), whole)
  train.train_and_evaluate(_histogram_config(num_steps=3), parts)
  train.train_and_evaluate(_histogram_config(num_steps=6), parts)
  assert _records(whole) == _records(parts)
  assert [r['step'] for r in _records(parts)] == [1, 2, 3, 4, 5, 6]
  _, state_whole, _ = dulx.restore(whole)
  _, state_parts, _ = dulx.restore(parts)
  chex.assert_trees_all_equal(state_whole.params, state_parts.params)
  chex.assert_trees_all_equal(state_whole.opt_state, state_parts.opt_state)


def test_rerun_with_more_steps_continues(tmp_path):
  workdir = str(tmp_path / 'w')
  train.train_and_evaluate(_histogram_config(num_steps=3), workdir)
  train.train_and_evaluate(_histogram_config(num_steps=5), workdir)
  _, state, _ = dulx.restore(workdir)
  assert int(state.step) == 5


def test_resume_refuses_another_state_layout_before_writing(tmp_path):
  workdir = str(tmp_path / 'w')
  train.train_and_evaluate(_histogram_config(num_steps=3, grad_clip=1.0), workdir)
  before = snapshot(workdir)
  for change, match in ((dict(optimizer='adamw'), 'with --optimizer=adam, and'),
                        (dict(grad_clip=0.0), 'with --grad_clip=1.0, and'),
                        (dict(ema_decay=0.9), 'with --ema_decay=0.0, and')):
    with pytest.raises(CheckpointError, match=match):
      train.train_and_evaluate(_histogram_config(**{'num_steps': 6, 'grad_clip': 1.0, **change}), workdir)
    assert snapshot(workdir) == before
  # Values that leave the layout as it is may change: another clipping norm, learning rate.
  train.train_and_evaluate(_histogram_config(num_steps=6, grad_clip=2.0, learning_rate=0.01), workdir)
  assert int(dulx.restore(workdir)[1].step) == 6


def test_resume_fills_left_out_options_with_defaults_and_names_what_changed(tmp_path):
  workdir = str(tmp_path / 'w')
  train.train_and_evaluate(_made_config(), workdir)  # Options left out: the builder's defaults.
  options = {**models.model_options('made'), 'hidden_sizes': [32], 'num_masks': 4}
  path = os.path.join(workdir, 'config.json')
  with open(path) as f:
    saved = json.load(f)
  assert saved['config']['model_options'] == json.loads(json.dumps(options))  # Every option.
  # As a workdir saved before the model had an option: the option is missing there.
  del saved['config']['model_options']['likelihood']
  with open(path, 'w') as f:
    json.dump(saved, f)
  before = snapshot(workdir)
  with pytest.raises(CheckpointError, match=r'options \(--hidden_sizes=\[32\] there, \[16\] here\)'):
    train.train_and_evaluate(_made_config(model_options={**options, 'hidden_sizes': [16]}), workdir)
  with pytest.raises(CheckpointError, match=r'levels and classes \(\(8, 8, 1\), 2, 10\), not \(\(8, 8, 1\), 17'):
    train.train_and_evaluate(_made_config(binarize='none', model_options=options), workdir)
  assert snapshot(workdir) == before
  # The same values, every option given (as the CLI gives them): the run resumes.
  train.train_and_evaluate(_made_config(num_steps=5, model_options=options), workdir)
  assert int(dulx.restore(workdir)[1].step) == 5


def test_resume_cuts_the_torn_last_metrics_line_of_a_killed_run(tmp_path):
  whole, killed = str(tmp_path / 'whole'), str(tmp_path / 'killed')
  train.train_and_evaluate(_histogram_config(num_steps=6), whole)
  train.train_and_evaluate(_histogram_config(num_steps=4), killed)
  path = os.path.join(killed, 'metrics.jsonl')
  with open(path) as f:
    lines = f.readlines()
  # Killed during step 4's record, after the step-3 checkpoint: a line cut short.
  with open(path, 'w') as f:
    f.writelines(lines[:3])
    f.write(lines[3][:25])
  assert [r['step'] for r in train.read_metrics(path)] == [1, 2, 3]
  shutil.rmtree(os.path.join(killed, 'checkpoints', '4'))
  train.train_and_evaluate(_histogram_config(num_steps=6), killed)
  assert _records(killed) == _records(whole)
  with open(path) as f:
    assert f.read().endswith('}\n')


def test_a_line_of_metrics_that_is_not_a_record_is_refused_before_writing(tmp_path):
  workdir = str(tmp_path / 'w')
  train.train_and_evaluate(_histogram_config(num_steps=3), workdir)
  path = os.path.join(workdir, 'metrics.jsonl')
  with open(path) as f:
    lines = f.readlines()
  for bad in ('{"step": 2, "lo\n', '[1, 2]\n'):
    with open(path, 'w') as f:
      f.writelines([lines[0], bad, *lines[2:]])
    before = snapshot(workdir)
    with pytest.raises(CheckpointError, match=r'metrics.jsonl, line 2, is not a metrics record'):
      train.train_and_evaluate(_histogram_config(num_steps=6), workdir)
    assert snapshot(workdir) == before


def test_checkpoints_context_finishes_its_saves_on_exit(tmp_path):
  tree = {'w': jnp.arange(1000.0)}
  with train.Checkpoints(str(tmp_path)) as checkpoints:
    checkpoints.save(7, tree)  # Asynchronous: only closing waits for it.
  with train.Checkpoints(str(tmp_path), read_only=True) as reader:
    assert reader.latest_step() == 7
    chex.assert_trees_all_equal(reader.restore(tree), tree)


def test_workdir_outputs_and_loss_falls(tmp_path):
  workdir = str(tmp_path / 'w')
  final = train.train_and_evaluate(
      _histogram_config(num_steps=40, eval_every=20, checkpoint_every=20, sample_every=20,
                        keep_checkpoints=1), workdir)
  records = _records(workdir)
  assert records[-1]['loss'] < 0.8 * records[0]['loss']
  for key in ('loss', 'nll', 'bits_per_dim', 'grad_norm', 'param_norm', 'learning_rate'):
    assert key in records[0]
  assert 'examples_per_sec' in train.read_metrics(os.path.join(workdir, 'metrics.jsonl'))[0]
  evals = [r for r in records if 'eval/bits_per_dim' in r]
  assert [r['step'] for r in evals] == [20, 40]
  assert final['bits_per_dim'] == pytest.approx(evals[-1]['eval/bits_per_dim'])
  assert final['nll'] == pytest.approx(final['bits_per_dim'] * 2 * np.log(2))
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['40']
  assert sorted(os.listdir(os.path.join(workdir, 'samples'))) == ['step_00000020.png', 'step_00000040.png']
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(os.path.join(workdir, 'tensorboard')))
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['config']['model'] == 'histogram'


def test_eval_matches_direct_log_prob(tmp_path):
  workdir = str(tmp_path / 'w')
  config = _histogram_config(num_steps=4)
  train.train_and_evaluate(config, workdir)
  model, state, _ = dulx.restore(workdir)
  ds = data.preprocess(data.load(config.dataset, config.eval_split), quantize=config.quantize)
  log_p = model.apply(state.variables(), jnp.asarray(ds.x), method='log_prob')
  out = train.evaluate(workdir)
  assert out['nll'] == pytest.approx(-float(np.mean(log_p)), rel=1e-5)
  assert out['num_examples'] == 500


def test_importance_samples_tighten_a_flows_bound_and_are_refused_where_there_is_none(tmp_path):
  workdir = str(tmp_path / 'w')
  config = train.Config(model='maf', model_options={'num_layers': 2, 'hidden_sizes': [16]},
                        dataset='digits', train_split='train[:256]', eval_split='train[256:320]',
                        batch_size=32, num_steps=2, eval_every=0, sample_every=0)
  final = train.train_and_evaluate(config, workdir)
  one = train.evaluate(workdir)
  assert one['nll'] == final['nll'] and one['importance_samples'] == 1  # The same draws.
  many = train.evaluate(workdir, importance_samples=8)
  # L_8 gains on L_1 (by 1.3 nats per image for this flow; 0.5 is a margin well above
  # the noise of a 64-image mean); the first of its draws is L_1's.
  assert many['nll'] < one['nll'] - 0.5 and many['importance_samples'] == 8
  with pytest.raises(ConfigError, match='>= 1'):
    train.evaluate(workdir, importance_samples=0)
  made = str(tmp_path / 'made')
  train.train_and_evaluate(_made_config(), made)
  with pytest.raises(ConfigError, match='no such bound to tighten'):
    train.evaluate(made, importance_samples=4)


def test_restore_api_scores_and_samples(tmp_path):
  workdir = str(tmp_path / 'w')
  train.train_and_evaluate(_made_config(), workdir)
  model, state, config = dulx.restore(workdir)
  assert config.model == 'made'
  x = jnp.zeros((2, 8, 8, 1), jnp.int32)
  log_p = model.apply(state.variables(), x, method='log_prob')
  chex.assert_shape(log_p, (2,))
  chex.assert_tree_all_finite(log_p)
  samples = dulx.sample(model, state.variables(), jax.random.PRNGKey(0), 3)
  chex.assert_shape(samples, (3, 8, 8, 1))
  assert set(np.unique(samples)) <= {0, 1}


def test_sample_files_are_named_by_what_decides_the_draw(tmp_path):
  workdir = str(tmp_path / 'w')
  train.train_and_evaluate(_made_config(num_steps=2), workdir)
  draws = [dict(num=4), dict(num=4, seed=1), dict(num=5), dict(num=4, temperature=0.5)]
  paths = [train.sample(workdir, **draw)['npy'] for draw in draws]
  assert [os.path.basename(p) for p in paths] == [
      'sample_step_00000002_seed0_n4.npy', 'sample_step_00000002_seed1_n4.npy',
      'sample_step_00000002_seed0_n5.npy', 'sample_step_00000002_seed0_n4_t0.5.npy']
  assert not np.array_equal(np.load(paths[0]), np.load(paths[1]))  # Another seed, another draw.
  again = train.sample(workdir, num=4)['npy']  # The same draw again: the same file, the same samples.
  assert again == paths[0] and np.array_equal(np.load(again), np.load(paths[0]))


def test_sample_draws_the_label_asked_for(tmp_path):
  workdir = str(tmp_path / 'w')
  train.train_and_evaluate(_made_config(model_options={'hidden_sizes': [32], 'conditional': True}),
                           workdir)
  model, state, _ = dulx.restore(workdir)
  out = train.sample(workdir, 4, output=str(tmp_path / 'sevens'), label=7)
  assert out['labels'] == [7, 7, 7, 7]
  direct = dulx.sample(model, state.variables(), jax.random.PRNGKey(0), 4, y=jnp.full(4, 7))
  np.testing.assert_array_equal(np.load(out['npy']), direct)
  assert train.sample(workdir, 12, output=str(tmp_path / 'all'))['labels'] == [*range(10), 0, 1]
  # Completion: each image under its own label, unless a label is given.
  own = data.load('digits', 'train[256:262]').y.tolist()
  assert train.sample(workdir, 6, given_rows=2, output=str(tmp_path / 'own'))['labels'] == own
  assert train.sample(workdir, 2, given_rows=2, output=str(tmp_path / 'as7'), label=7)['labels'] == [7, 7]
  for label in (-1, 10):
    with pytest.raises(ConfigError, match=rf'--label={label} is not a class of digits'):
      train.sample(workdir, 4, output=str(tmp_path / 'bad'), label=label)
  unconditional = str(tmp_path / 'u')
  train.train_and_evaluate(_made_config(), unconditional)
  assert train.sample(unconditional, 2, output=str(tmp_path / 'u2'))['labels'] is None
  with pytest.raises(ConfigError, match='--label=7: this made is not class-conditional'):
    train.sample(unconditional, 2, output=str(tmp_path / 'u3'), label=7)
  assert not os.path.exists(tmp_path / 'bad.npy') and not os.path.exists(tmp_path / 'u3.npy')


def test_completion_keeps_the_given_rows_and_draws_the_rest_given_them(tmp_path):
  workdir = str(tmp_path / 'w')
  train.train_and_evaluate(_made_config(), workdir)
  out = train.sample(workdir, 5, given_rows=3, output=str(tmp_path / 'c'))
  named = [os.path.basename(train.sample(workdir, 1, given_rows=3, split=split)['npy'])
           for split in (None, 'train[256:320]', 'train[300:320]')]
  assert named[0] == 'sample_step_00000003_seed0_n1_given3.npy' and len(set(named)) == 3
  completed = np.load(out['npy'])
  x = data.preprocess(data.load('digits', 'train[256:261]'), binarize='threshold').x  # Eval split.
  np.testing.assert_array_equal(completed[:, :3], x[:, :3])
  assert not np.array_equal(completed[:, 3:], x[:, 3:])  # 200 binary pixels drawn, not copied.
  model, state, _ = dulx.restore(workdir)
  mask = np.broadcast_to(np.arange(8)[:, None, None] < 3, x.shape)
  direct = dulx.sample(model, state.variables(), jax.random.PRNGKey(0), 5, given=x, given_mask=mask)
  np.testing.assert_array_equal(completed, direct)
  for rows in (-1, 8):
    with pytest.raises(ConfigError, match=rf'--given_rows={rows} must be in \[1, 8\)'):
      train.sample(workdir, 5, given_rows=rows, output=str(tmp_path / 'bad'))
  with pytest.raises(ConfigError, match='more than the 64 images'):
    train.sample(workdir, 65, given_rows=3, output=str(tmp_path / 'bad'))
  shuffled = str(tmp_path / 'random_order')  # Its first dimensions are not the top rows.
  train.train_and_evaluate(_made_config(model_options={'hidden_sizes': [32], 'ordering': 'random'}),
                           shuffled)
  with pytest.raises(ConfigError, match='does not draw the top rows first'):
    train.sample(shuffled, 5, given_rows=3, output=str(tmp_path / 'bad'))
  histogram = str(tmp_path / 'histogram')
  train.train_and_evaluate(_histogram_config(num_steps=1), histogram)
  with pytest.raises(ConfigError, match='needs image data'):
    train.sample(histogram, 5, given_rows=1, output=str(tmp_path / 'bad'))
  assert not any(p.name.startswith('bad') for p in tmp_path.iterdir())


def test_runs_of_every_seed_score_the_same_eval_images(tmp_path):
  workdir = str(tmp_path / 'w')
  train.train_and_evaluate(_made_config(binarize='stochastic'), workdir)  # 4 masks, averaged at eval.
  setup, state = loop._restore_run(workdir)
  ds = loop.load_data(setup.config, setup.config.eval_split)
  scores = [loop.evaluate_dataset(setup, state.variables(), ds, seed)['nll'] for seed in (0, 1, 2)]
  assert scores[0] == scores[1] == scores[2]


def test_bfloat16_compute_keeps_float32_params_and_loss(tmp_path):
  workdir = str(tmp_path / 'w')
  final = train.train_and_evaluate(_made_config(dtype='bfloat16'), workdir)
  assert np.isfinite(final['nll'])
  _, state, _ = dulx.restore(workdir)
  assert {leaf.dtype for leaf in jax.tree.leaves(state.params)} == {jnp.dtype('float32')}
  assert all(isinstance(r['loss'], float) for r in _records(workdir))


def test_ema_params_are_kept_and_used(tmp_path):
  workdir = str(tmp_path / 'w')
  train.train_and_evaluate(_histogram_config(num_steps=3, ema_decay=0.5), workdir)
  model, state, config = dulx.restore(workdir)
  assert state.ema_params is not None
  assert not np.allclose(state.ema_params['logits'], state.params['logits'])
  assert state.variables()['params'] is state.ema_params
  # --mode=eval|sample use the EMA, or with use_ema=False the live parameters.
  ds = data.preprocess(data.load(config.dataset, config.eval_split), quantize=config.quantize)
  nlls = []
  for use_ema, params in ((True, state.ema_params), (False, state.params)):
    out = train.evaluate(workdir, use_ema=use_ema)
    log_p = model.apply({'params': params}, jnp.asarray(ds.x), method='log_prob')
    assert out['nll'] == pytest.approx(-float(np.mean(log_p)), rel=1e-5)
    assert out['params'] == ('ema' if use_ema else 'live')
    nlls.append(out['nll'])
    drawn = train.sample(workdir, num=64, use_ema=use_ema)['npy']
    assert os.path.basename(drawn) == f'sample_step_00000003_seed0_n64{"" if use_ema else "_live"}.npy'
    np.testing.assert_array_equal(
        np.load(drawn), dulx.sample(model, {'params': params}, jax.random.PRNGKey(0), 64))
  assert abs(nlls[0] - nlls[1]) > 1e-4 * nlls[1]  # The two checks above tell EMA from live.


def test_ema_is_refused_where_batch_norm_keeps_statistics_of_the_live_parameters(tmp_path):
  """Batch norm's running statistics follow the live parameters, so the EMA parameters would
  be scored with another network's statistics (a RealNVP on MNIST: 1.506 bits/dim at step
  4,000 against its live parameters' 1.383). Refused before anything is written; act norm,
  which keeps no statistics, trains with the EMA."""
  config = train.Config(model='realnvp', model_options={'num_scales': 1, 'hidden': 8, 'num_blocks': 1},
                        dataset='digits', train_split='train[:64]', eval_split='train[64:96]',
                        batch_size=32, num_steps=1, eval_every=0, sample_every=0, ema_decay=0.9)
  workdir = tmp_path / 'w'
  with pytest.raises(ConfigError, match="not batch norm's running statistics"):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()
  act = config.replace(model_options={**config.model_options, 'norm': 'act'})
  train.train_and_evaluate(act, str(workdir))
  _, state, _ = dulx.restore(str(workdir))
  assert state.ema_params is not None


def test_ema_decay_warms_up_from_the_initial_parameters():
  # ema <- d_t ema + (1 - d_t) params after update t, d_t = min(decay, (1 + t) / (10 + t)).
  loss_fn = lambda params, model_state, batch, rngs: (jnp.sum((params['w'] - 1.0)**2),
                                                      ({}, model_state))
  tx = optax.sgd(0.25)
  step = jax.jit(train.make_train_step(loss_fn, tx, optax.constant_schedule(0.25), 0.999))
  params = {'w': jnp.zeros(3)}
  state = train.TrainState(step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params),
                           model_state={}, ema_params=params, rng=jax.random.PRNGKey(0))
  ema, w = 0.0, 0.0
  for t in range(30):
    state, _ = step(state, {})
    w += 0.5 * (1.0 - w)  # SGD on (w - 1)^2 with learning rate 1/4.
    decay = min(0.999, (1 + t) / (10 + t))
    ema = decay * ema + (1 - decay) * w
    np.testing.assert_allclose(state.ema_params['w'], ema, rtol=1e-5)
  np.testing.assert_allclose(float(train.ema_decay_at(10**6, 0.999)), 0.999)
  # After 30 updates the initial zeros weigh prod(d_t) < 1%, not 0.999^30 = 97%.
  assert state.ema_params['w'][0] > 0.9


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path / 'w')
  config = _histogram_config(num_steps=3, checkpoint_every=3)
  train.train_and_evaluate(config, workdir)
  with pytest.raises(DivergedError, match=r'at step \d+.*step 3\) is intact'):
    train.train_and_evaluate(config.replace(num_steps=40, learning_rate=1e38), workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['3']
  _, state, _ = dulx.restore(workdir)
  chex.assert_tree_all_finite(state.params)
  assert int(state.step) == 3


def test_one_training_at_a_time_holds_the_workdir(tmp_path):
  workdir = str(tmp_path / 'w')
  config = _histogram_config(num_steps=3, checkpoint_every=3)
  train.train_and_evaluate(config, workdir)
  with pytest.raises(DivergedError):
    train.train_and_evaluate(config.replace(num_steps=40, learning_rate=1e38), workdir)
  # Both runs, the one that ended and the one that failed, let go of the workdir.
  with open(os.path.join(workdir, '.lock'), 'r+') as held:
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # As a training in progress holds it.
    before = snapshot(workdir)
    with pytest.raises(CheckpointError, match='is in use by another training run'):
      train.train_and_evaluate(config.replace(num_steps=6), workdir)
    assert snapshot(workdir) == before
  train.train_and_evaluate(config.replace(num_steps=6), workdir)
  _, state, _ = dulx.restore(workdir)
  assert int(state.step) == 6


def test_a_workdir_on_a_filesystem_without_locks_still_trains(tmp_path, monkeypatch):
  def no_locks(fd, operation):
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
  monkeypatch.setattr(loop.fcntl, 'flock', no_locks)
  workdir = str(tmp_path / 'w')
  train.train_and_evaluate(_histogram_config(num_steps=3), workdir)
  _, state, _ = dulx.restore(workdir)
  assert int(state.step) == 3


def test_workdir_of_another_model_is_refused_untouched(tmp_path):
  workdir = str(tmp_path / 'w')
  train.train_and_evaluate(_histogram_config(num_steps=2), workdir)
  before = snapshot(workdir)
  with pytest.raises(CheckpointError, match="trained with model 'histogram'"):
    train.train_and_evaluate(_made_config(), workdir)
  assert snapshot(workdir) == before
