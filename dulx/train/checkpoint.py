"""Orbax checkpoints of the TrainState, with errors a user can act on.

A workdir is opened read-only first (`Checkpoints(..., read_only=True)`) to find and
restore the latest checkpoint, so a bad checkpoint is reported before anything in
the workdir is written.
"""

import contextlib
import logging
import os

import orbax.checkpoint as ocp

from dulx.errors import CheckpointError
from dulx.train.state import TrainState

__all__ = ['Checkpoints']


@contextlib.contextmanager
def _quiet():
  """Orbax logs warnings when opened read-only, and errors for a corrupt checkpoint
  that `Checkpoints` turns into one CheckpointError; neither should reach the user.
  Orbax logs through std `logging` loggers of its own, hence `logging.disable`."""
  logging.disable(logging.ERROR)
  try:
    yield
  finally:
    logging.disable(logging.NOTSET)


class Checkpoints:
  """The checkpoints under `directory`: keep the last `keep`, restore the latest.

  Close it when done (`close()`, or use it as a context manager): that waits for
  pending saves and releases Orbax's background resources."""

  def __init__(self, directory: str, keep: int = 3, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    with _quiet():
      try:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=not read_only, read_only=read_only)
        self._manager = ocp.CheckpointManager(self.directory, options=options)
      except Exception as e:  # Orbax raises many types for an unreadable directory.
        raise CheckpointError(f'cannot open checkpoints in {self.directory}: {e}') from None

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore(self, abstract_state: TrainState, step: int | None = None) -> TrainState:
    """Restores `step` (default: the latest) into the shapes/shardings of `abstract_state`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f'no checkpoint in {self.directory}.')
    with _quiet():
      try:
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
      except Exception as e:  # Corrupt files, wrong structure, wrong shapes: all the user's to fix.
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f'cannot restore the checkpoint at step {step} in {self.directory} '
            f'(corrupt, or written for another model or options): {reason}') from None

  def save(self, step: int, state: TrainState) -> None:
    """Saves asynchronously; `wait()` before relying on it being on disk."""
    if step != self.latest_step():
      self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> 'Checkpoints':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
