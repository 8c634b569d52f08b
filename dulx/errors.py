"""Errors that mean "bad input", as opposed to bugs.

The experiment CLI turns every `UserError` into one line on stderr and a non-zero
exit, with no traceback; anything else is a bug and keeps its traceback.
"""

__all__ = ['UserError', 'DataError', 'ConfigError', 'CheckpointError', 'DivergedError']


class UserError(Exception):
  """Bad input from a user: a message fit to print as one line."""


class DataError(UserError, ValueError):
  """A dataset spec, file or split that cannot be loaded."""


class ConfigError(UserError, ValueError):
  """A configuration value or model option that cannot be used."""


class CheckpointError(UserError):
  """A workdir or checkpoint that cannot be read or does not fit."""


class DivergedError(UserError):
  """Training produced a NaN or Inf; the message names the step and the metric."""
