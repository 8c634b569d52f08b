"""The importance-weighted bound: its arithmetic, and that it closes on the exact log P(x)."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dulx.eval import importance
from dulx.models import build_model
from dulx.models.flows import base
from dulx.models.flows.autoregressive import AutoregressiveFlow
from tests import helpers


def test_the_bound_is_the_log_mean_exp_of_draws_whose_first_is_the_one_draw_key():
  bound_fn = lambda key: jax.random.normal(key, (5,)) * 3.0 - 100.0
  rng = jax.random.PRNGKey(3)
  keys = importance.draw_keys(rng, 7)
  assert np.array_equal(keys[0], rng) and len(np.unique(np.asarray(keys), axis=0)) == 7
  draws = np.stack([np.asarray(bound_fn(k), np.float64) for k in keys])
  want = np.log(np.mean(np.exp(draws + 100.0), axis=0)) - 100.0
  np.testing.assert_allclose(importance.importance_weighted(bound_fn, rng, 7), want, rtol=1e-6)
  np.testing.assert_array_equal(importance.importance_weighted(bound_fn, rng, 1), bound_fn(rng))
  with pytest.raises(ValueError, match='>= 1'):
    importance.importance_weighted(bound_fn, rng, 0)


def test_the_bound_tightens_with_k_towards_log_p():
  # b = log P + eps - 1/2, eps ~ N(0, 1): E[exp b] = P, E[L_1] = log P - 1/2, and
  # E[L_K] rises to log P, with a gap of about (e - 1) / (2K) (the delta method).
  log_p, batch = -50.0, 4000
  bound_fn = lambda key: log_p + jax.random.normal(key, (batch,)) - 0.5
  means = [float(jnp.mean(importance.importance_weighted(bound_fn, jax.random.PRNGKey(0), k)))
           for k in (1, 4, 32, 512)]
  # 4,000 examples: the mean of L_1 has standard error 1/sqrt(4000) = 0.016, less for larger K.
  assert means[0] == pytest.approx(log_p - 0.5, abs=0.06)
  assert means[0] < means[1] < means[2] < means[3] <= log_p
  assert means[3] == pytest.approx(log_p - (math.e - 1) / 1024, abs=0.01)


def test_a_dequantized_flow_closes_on_its_exact_discrete_likelihood():
  """A MAF on 2 dimensions of 3 levels. Per cell x, the midpoint rule on a 128 x 128 grid of
  u gives log P(x) = log E_u[exp b(u)], E[b] and the weights' variance Var(exp b / P);
  the flow's one-draw log_prob averages to E[b], and L_K closes on log P(x)."""
  levels, num_draws, k = 3, 256, 4096
  model = AutoregressiveFlow(event_shape=(2,), num_levels=levels, num_layers=2,
                             hidden_sizes=(16,), transform='spline', num_bins=4)
  variables = helpers.random_variables(model, scale=0.3)
  x = jnp.asarray(list(itertools.product(range(levels), repeat=2)), jnp.int32)  # The 9 cells.

  def bound_at(module, x, u):  # b(u) with the noise u given: log p(v) - D log L.
    w, logit_logdet = base.logit_preprocess((x + u) / levels, module.alpha)
    z, logdet = module.forward(w)
    return (base.standard_normal_log_prob(z) + logdet + logit_logdet
            + base.discrete_log_prob_offset(2, levels))

  n = 128
  grid = (np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing='ij'), -1).reshape(-1, 2) + 0.5) / n
  log_p, mean_b, std_b, var_w = [], [], [], []
  for cell in np.asarray(x):
    b = np.asarray(model.apply(variables, jnp.broadcast_to(cell, grid.shape).astype(jnp.float32),
                               jnp.asarray(grid, jnp.float32), method=bound_at), np.float64)
    log_p.append(np.log(np.mean(np.exp(b - b.max()))) + b.max())
    mean_b.append(b.mean())
    std_b.append(b.std())
    var_w.append(np.var(np.exp(b - log_p[-1])))
  log_p, mean_b, std_b, var_w = map(np.asarray, (log_p, mean_b, std_b, var_w))
  assert np.all(log_p - mean_b > 0.05)  # The one-draw bound's gap (a KL) is not small here.

  log_prob = lambda key: model.apply(variables, x, method='log_prob', rngs={'dequantize': key})
  one = np.mean([log_prob(jax.random.PRNGKey(s)) for s in range(num_draws)], axis=0)
  many = np.asarray(importance.importance_weighted(log_prob, jax.random.PRNGKey(0), k))
  # Within 5 standard errors: of a mean of 256 draws of b, and of L_K, whose bias is about
  # -Var(w) / 2K and spread sqrt(Var(w) / K) (the delta method).
  np.testing.assert_array_less(np.abs(one - mean_b), 5 * std_b / np.sqrt(num_draws))
  np.testing.assert_array_less(np.abs(many - (log_p - var_w / (2 * k))), 5 * np.sqrt(var_w / k))
  assert np.all(many > one)


@pytest.mark.parametrize('name,shape,levels,options,bound', [
    ('realnvp', (8, 8, 1), 4, {}, True), ('glow', (8, 8, 1), 4, {}, True),
    ('flowpp', (8, 8, 1), 4, {}, True), ('nice', (8, 8, 1), 4, {}, True),
    ('maf', (2,), 4, {}, True), ('iaf', (2,), 4, {}, True), ('maf', (2,), None, {}, False),
    ('ffjord', (2,), 4, {'eval_trace': 'exact'}, True),
    ('ffjord', (2,), 4, {'eval_trace': 'hutchinson'}, False), ('ffjord', (2,), None, {}, False),
    ('cdf_flow', (2,), None, {}, False), ('made', (2, 2, 1), 2, {}, False),
    ('pixelcnn', (4, 4, 1), 2, {}, False)])
def test_the_models_whose_log_prob_is_a_bound_say_so(name, shape, levels, options, bound):
  """Dequantized flows score one draw of a bound; continuous flows, FFJORD's trace estimate
  and the exact discrete models do not (the harness refuses importance samples for them)."""
  model = build_model(name, helpers.dataset_info(shape, levels), options)
  assert getattr(model, 'log_prob_is_bound', False) is bound
