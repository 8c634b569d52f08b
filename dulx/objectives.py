"""Losses and the units they are reported in, as pure functions."""

import math

import jax
import jax.numpy as jnp

__all__ = ['bits_per_dim', 'nll_loss']


def bits_per_dim(nll: jax.Array, num_dims: int) -> jax.Array:
  """Converts a negative log-likelihood in nats per example to bits per dimension.

  bits/dim = nll / (D ln 2), the unit of the likelihood literature (e.g. van den
  Oord et al. 2016). For discrete models nll is -log P(x) of the discrete data; for
  flows it includes the dequantization term, so both compare on 256-level data.
  """
  return nll / (num_dims * math.log(2.0))


def nll_loss(log_prob: jax.Array, num_dims: int) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Maximum-likelihood loss from per-example log-likelihoods.

  Args:
    log_prob: [B] float32 log p(x) in nats per example.
    num_dims: D, the number of dimensions of one example.

  Returns:
    The loss, mean negative log-likelihood in nats per dimension (a scale that stays
    O(1) whatever the data size), and metrics: `nll` in nats per example and
    `bits_per_dim`, both averaged over the batch.
  """
  if log_prob.ndim != 1:
    raise ValueError(f'log_prob must be [B], got shape {log_prob.shape}.')
  nll = -jnp.mean(log_prob.astype(jnp.float32))
  return nll / num_dims, {'nll': nll, 'bits_per_dim': bits_per_dim(nll, num_dims)}
