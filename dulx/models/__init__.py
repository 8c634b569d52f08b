"""The model registry: a model name and its options -> a flax Module.

Every model file has a builder `build(info, *, dtype, **options)` whose keyword
options are the CLI flags of the same name; the model's name is the file's name
(`dulx/models/autoregressive/made.py` is 'made'). A file that holds several models
(NICE and RealNVP share their coupling layers) names them in a dict
`BUILDERS = {'nice': build_nice, 'realnvp': build_realnvp}` instead. The registry is
found by scanning the family packages, so adding a model touches no shared list.
The helpers below are the checks that many builders share (each raises ConfigError
with one line), and the input check that many models share.
"""

from collections.abc import Callable, Mapping, Sequence
import functools
import importlib
import inspect
import math
import numbers
import pkgutil
from typing import Any, TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from dulx.errors import ConfigError

if TYPE_CHECKING:
  from dulx.data import DatasetInfo

__all__ = [
    'FAMILIES', 'LIKELIHOODS', 'build_model', 'check_event_shape', 'condition_classes',
    'get_builder', 'model_options', 'names', 'require_bool', 'require_choice', 'require_int',
    'require_levels', 'require_multiple', 'require_positive_sizes', 'require_rate',
    'resolve_likelihood',
]

LIKELIHOODS = ('bernoulli', 'categorical')
FAMILIES = ('autoregressive', 'flows', 'latent', 'gan', 'selfsup', 'semisup')


@functools.cache
def _builders() -> dict[str, Callable[..., nn.Module]]:
  """Every model's builder by name, from the modules of the family packages."""
  builders = {}
  for family in FAMILIES:
    try:
      package = importlib.import_module(f'{__name__}.{family}')
    except ModuleNotFoundError as e:
      if e.name != f'{__name__}.{family}':
        raise
      continue  # A family that has no code yet.
    for module_info in pkgutil.iter_modules(package.__path__):
      module = importlib.import_module(f'{package.__name__}.{module_info.name}')
      found = getattr(module, 'BUILDERS', None)
      if found is None and hasattr(module, 'build'):
        found = {module_info.name: module.build}
      for name, builder in (found or {}).items():
        if name in builders:
          raise RuntimeError(f'model {name!r} is defined twice (in {module.__name__}).')
        builders[name] = builder
  return dict(sorted(builders.items()))


def names() -> tuple[str, ...]:
  """The names of every registered model, sorted."""
  return tuple(_builders())


def get_builder(name: str):
  """The builder `build(info, *, dtype, **options)` of model `name`."""
  builders = _builders()
  if name not in builders:
    raise ConfigError(f'unknown model {name!r}; known models: {", ".join(builders)}.')
  return builders[name]


def model_options(name: str) -> dict[str, Any]:
  """The keyword options of a model's builder and their defaults (dtype excluded)."""
  parameters = inspect.signature(get_builder(name)).parameters.values()
  return {p.name: p.default for p in parameters
          if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != 'dtype'}


def build_model(name: str, info: 'DatasetInfo', options: Mapping[str, Any],
                dtype: Any = jnp.float32) -> nn.Module:
  """Builds model `name` for data described by `info`.

  Args:
    name: one of `names()`.
    info: the dataset's metadata (shape, levels, classes).
    options: the builder's keyword options, e.g. {'hidden_sizes': (512, 512)}.
    dtype: the computation dtype (parameters stay float32).

  Returns:
    An unbound flax Module.

  Raises:
    ConfigError: an unknown model or option, or an option value the builder refuses.
  """
  known = model_options(name)
  unknown = sorted(set(options) - set(known))
  if unknown:
    raise ConfigError(f'unknown option(s) {", ".join(unknown)} for model {name!r}; '
                      f'known: {", ".join(sorted(known)) or "none"}.')
  return get_builder(name)(info, dtype=dtype, **options)


def require_levels(info: 'DatasetInfo', model: str) -> int:
  """The data's number of levels; ConfigError when the data are continuous."""
  if info.num_levels is None:
    raise ConfigError(f'{model} models discrete data but {info.spec!r} is continuous; '
                      'pass --quantize=K to discretise it into K levels.')
  return info.num_levels


def condition_classes(info: 'DatasetInfo', conditional: Any, model: str) -> int | None:
  """num_classes for a model that is class-conditional iff `conditional`."""
  require_bool('conditional', conditional)
  if not conditional:
    return None
  if info.num_classes is None:
    raise ConfigError(f'--conditional needs labels, but {info.spec!r} has none '
                      f'({model} cannot be class-conditional on it).')
  return info.num_classes


def require_bool(name: str, value: Any) -> bool:
  """`value` if it is a bool (1, 'yes' and the like are refused)."""
  if not isinstance(value, bool):
    raise ConfigError(f'--{name} must be true or false, got {value!r}.')
  return value


def require_int(name: str, value: Any, minimum: int = 1) -> int:
  """`value` as an int >= minimum (bools refused)."""
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ConfigError(f'--{name} must be an integer >= {minimum}, got {value!r}.')
  return value


def require_multiple(name: str, value: Any, of: int, of_name: str) -> int:
  """`value` as an int >= 1 that `of` divides, e.g. features split into attention heads."""
  value = require_int(name, value)
  if value % of:
    raise ConfigError(f'--{name}={value} must be a multiple of --{of_name}={of}.')
  return value


def require_number(name: str, value: Any, *, allow_zero: bool = False) -> float:
  """`value` as a finite float > 0, or >= 0 with `allow_zero` (a tolerance, a bound, a
  weight: none of them works at infinity; bools refused)."""
  if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
      or not (value >= 0 if allow_zero else value > 0)):
    raise ConfigError(f'--{name} must be a finite number {">=" if allow_zero else ">"} 0, '
                      f'got {value!r}.')
  return float(value)


def require_rate(name: str, value: Any) -> float:
  """`value` as a float in [0, 1) (a dropout rate; bools refused)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
    raise ConfigError(f'--{name} must be a number in [0, 1), got {value!r}.')
  return float(value)


def require_positive_sizes(name: str, value: Any) -> tuple[int, ...]:
  """A sequence of layer widths as a tuple of ints >= 1 (may be empty)."""
  if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
    raise ConfigError(f'--{name} must be a list of positive integers, got {value!r}.')
  if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
    raise ConfigError(f'--{name} must be a list of positive integers, got {list(value)!r}.')
  return tuple(value)


def require_choice(name: str, value: Any, choices: Sequence[str]) -> str:
  """`value` if it is one of `choices`."""
  if value not in choices:
    raise ConfigError(f'--{name}={value!r} is not one of {", ".join(choices)}.')
  return value


def resolve_likelihood(likelihood: Any, num_levels: int) -> str:
  """'bernoulli' or 'categorical' from an option 'auto' | 'bernoulli' | 'categorical'.

  'auto' is Bernoulli for binary data (one logit per dim) and categorical otherwise.
  """
  likelihood = require_choice('likelihood', likelihood, ('auto',) + LIKELIHOODS)
  if likelihood == 'auto':
    return 'bernoulli' if num_levels == 2 else 'categorical'
  if likelihood == 'bernoulli' and num_levels != 2:
    raise ConfigError(f'--likelihood=bernoulli needs binary data, but the data have '
                      f'{num_levels} levels; use categorical or --binarize.')
  return likelihood


def check_event_shape(x: jax.Array, event_shape: Sequence[int]) -> None:
  """ValueError unless x is a batch [B, *event_shape] (a model's input check)."""
  if x.shape[1:] != tuple(event_shape):
    expected = ', '.join(['B', *map(str, event_shape)])
    raise ValueError(f'input has shape {x.shape}; expected [{expected}].')
