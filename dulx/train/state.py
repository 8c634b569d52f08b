"""The training state: one pytree that is the whole of a run's progress."""

from typing import Any

import flax.struct
import jax
import optax

__all__ = ['TrainState']


@flax.struct.dataclass
class TrainState:
  """What a checkpoint holds; everything else is rebuilt from the config.

  The optimiser itself (an `optax.GradientTransformation`) is not part of the
  state: the step closes over it, so the state stays plain arrays and a
  checkpoint restores into any process that builds the same config.
  """
  step: jax.Array  # [] int32: number of updates applied so far.
  params: Any  # float32 parameters.
  opt_state: optax.OptState
  model_state: Any  # Mutable collections other than params (e.g. batch_stats); {} if none.
  ema_params: Any  # Exponential moving average of params, or None when EMA is off.
  rng: jax.Array  # Base key; the key of step s is fold_in(rng, s).

  def variables(self, use_ema: bool = True) -> dict[str, Any]:
    """The variables to `apply` a model with: EMA params where kept, else params."""
    params = self.ema_params if use_ema and self.ema_params is not None else self.params
    return {'params': params, **self.model_state}
