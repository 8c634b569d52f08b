"""Evaluation metrics beyond a model's own log_prob."""

from dulx.eval import importance

__all__ = ['importance']
