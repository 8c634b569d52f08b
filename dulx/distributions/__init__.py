"""Likelihoods: per-dimension log-probabilities and samplers."""

from dulx.distributions.discrete import bernoulli_log_prob
from dulx.distributions.discrete import categorical_log_prob
from dulx.distributions.discrete import log_prob
from dulx.distributions.discrete import sample

__all__ = ['bernoulli_log_prob', 'categorical_log_prob', 'log_prob', 'sample']
