"""FFJORD: a continuous normalizing flow (Grathwohl et al. 2019).

The flow is the solution map of an ODE: z(0) = x, dz/dt = f(z(t), t) for t in [0, T],
z = z(T). By the instantaneous change of variables (Chen et al. 2018, Thm. 1),

    log |det dz(T)/dx| = integral_0^T tr(df/dz(z(t), t)) dt,

so the ODE is solved for the augmented state (z, L), dL/dt = tr(df/dz), and
log p(x) = log N(z(T); 0, I) + L(T). The inverse solves the same ODE from T back to 0.
f is a stack of "concat-squash" layers, time entering every layer as a gate and a
bias: h' = (W h + b) * sigmoid(a t + c) + e t. W is a dense layer on the flattened
state (`field='mlp'`, FFJORD's toy architecture) or, for images, a 3x3 convolution on
the state seen as an [H, W, C] image (`field='conv'`, FFJORD's image architecture
without its multi-scale split), so the field is local and its size does not grow
with the image.

The trace: in training, Hutchinson's estimator tr(J) = E[eps^T J eps] with one
Rademacher eps per example from the 'noise' rng, held fixed along the solve (FFJORD
Sec. 3.1): one vector-Jacobian product per evaluation of f instead of D. In
evaluation (train=False) the exact trace, from the full per-example Jacobian
(`eval_trace='exact'`, D forward-mode products per evaluation of f), or the same
estimator as in training (`eval_trace='hutchinson'`, for images, where D = 784
products per step would dominate): log p(x) is linear in the trace, so the mean of
the estimates over a test set is an unbiased estimate of its mean log-likelihood.

The ODE is solved by diffrax (Dopri5 with an adaptive PID step-size controller,
`rtol`/`atol` options). Gradients use diffrax's RecursiveCheckpointAdjoint:
backpropagation through the solver's own steps with checkpointing. It gives the exact
gradient of the computed log-likelihood (discretise-then-optimise), which the
backsolve adjoint of Chen et al. only approximates by solving a second ODE backwards,
and for the sizes dulx trains its memory (the checkpoints) is small. Step sizes are
chosen for the whole batch (the error norm is over the batch's state), as in FFJORD.

Images are flattened, dequantized and mapped to logit space as for MAF
(`dulx.models.flows.autoregressive.to_flow_space`), with every Jacobian counted.
"""

import math
from typing import Any, Literal, TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from dulx.errors import ConfigError
from dulx.models import check_event_shape, require_choice, require_int, require_positive_sizes
from dulx.models.flows import base
from dulx.models.flows.autoregressive import from_flow_space, to_flow_space

try:
  import diffrax
except ImportError:  # Model discovery imports every model; `build` says what is missing.
  diffrax = None

if TYPE_CHECKING:
  from dulx.data import DatasetInfo

__all__ = ['ACTIVATIONS', 'EVAL_TRACES', 'FIELDS', 'FFJORD', 'VectorField', 'build']

ACTIVATIONS = {'softplus': nn.softplus, 'tanh': jnp.tanh}
FIELDS = ('mlp', 'conv')
EVAL_TRACES = ('exact', 'hutchinson')


class ConcatSquash(nn.Module):
  """h' = (W h + b) * sigmoid(a t + c) + e t: a layer W gated and shifted by time.

  W is dense on [B, F] inputs, or a 3x3 'SAME' convolution on [B, H, W, C] images when
  `conv` (gate and shift then act per channel).
  """
  features: int
  conv: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h: jax.Array, t: jax.Array) -> jax.Array:
    t = jnp.reshape(t, (1,) * (h.ndim - 1) + (1,)).astype(self.dtype)
    gate = nn.sigmoid(nn.Dense(self.features, dtype=self.dtype, name='gate')(t))
    shift = nn.Dense(self.features, use_bias=False, dtype=self.dtype, name='shift')(t)
    if self.conv:
      linear = nn.Conv(self.features, (3, 3), padding='SAME', dtype=self.dtype, name='linear')
    else:
      linear = nn.Dense(self.features, dtype=self.dtype, name='linear')
    return linear(h) * gate + shift


class VectorField(nn.Module):
  """f(z, t): [B, D] float, scalar t -> [B, D] float32; examples do not interact.

  With an `image_shape` (H, W, C), H * W * C = D, the layers are convolutions on z
  seen as [B, H, W, C] (`hidden_sizes` are then channels); otherwise dense on [B, D].
  """
  num_dims: int
  hidden_sizes: tuple[int, ...]
  activation: str = 'softplus'
  dtype: Any = jnp.float32
  image_shape: tuple[int, int, int] | None = None

  @nn.compact
  def __call__(self, z: jax.Array, t: jax.Array) -> jax.Array:
    conv = self.image_shape is not None
    h = z.astype(self.dtype)
    if conv:
      h = h.reshape(z.shape[0], *self.image_shape)
    for width in self.hidden_sizes:
      h = ACTIVATIONS[self.activation](ConcatSquash(width, conv, self.dtype)(h, t))
    out_features = self.image_shape[-1] if conv else self.num_dims
    out = ConcatSquash(out_features, conv, self.dtype)(h, t)
    return out.reshape(z.shape[0], self.num_dims).astype(jnp.float32)


class FFJORD(nn.Module):
  """A continuous normalizing flow with a standard normal base, as a likelihood model.

  `forward`/`inverse` act on the flow's continuous space, [B, *event_shape]: the points
  themselves for continuous data, logits of dequantized values for discrete data.

  Attributes:
    event_shape: shape of one example; D = its size, flattened in C order.
    num_levels: L for discrete data (dequantized), None for continuous points.
    num_classes: unused (unconditional); None by the model contract.
    dtype: computation dtype of the vector field (the ODE state is float32).
    hidden_sizes: widths (field='mlp') or channels (field='conv') of the vector
      field's hidden layers.
    activation: 'softplus' or 'tanh' (smooth, so the ODE is well posed).
    field: 'mlp' (dense layers on the flattened state) or 'conv' (3x3 convolutions
      on the state as an image; event_shape must be (H, W, C)).
    eval_trace: the logdet in evaluation: 'exact' or 'hutchinson' (an unbiased
      estimate, one Rademacher probe per example from the 'noise' rng).
    integration_time: T.
    rtol: relative tolerance of the adaptive solver.
    atol: absolute tolerance of the adaptive solver.
    max_steps: the most solver steps of one solve (a bound that reverse-mode needs).
    alpha: the logit map's margin for discrete data.
  """
  event_shape: tuple[int, ...]
  num_levels: int | None = None
  num_classes: int | None = None
  dtype: Any = jnp.float32
  hidden_sizes: tuple[int, ...] = (64, 64, 64)
  activation: str = 'softplus'
  field: str = 'mlp'
  eval_trace: str = 'exact'
  integration_time: float = 1.0
  rtol: float = 1e-5
  atol: float = 1e-5
  max_steps: int = 1000
  alpha: float = 0.05

  @property
  def num_dims(self) -> int:
    return math.prod(self.event_shape)

  @property
  def latent_bounds(self) -> tuple[float, float]:
    """A range holding nearly all of the N(0, I) base: for pictures of the latent space."""
    return -4.0, 4.0

  def _field(self) -> VectorField:
    """The vector field as a free-standing module (parent=None), applied as a pure function."""
    image_shape = tuple(self.event_shape) if self.field == 'conv' else None
    return VectorField(self.num_dims, tuple(self.hidden_sizes), self.activation, self.dtype,
                       image_shape=image_shape, parent=None)

  def setup(self):
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'activation must be one of {tuple(ACTIVATIONS)}, got {self.activation!r}.')
    if self.field not in FIELDS or self.eval_trace not in EVAL_TRACES:
      raise ValueError(f'field must be one of {FIELDS} and eval_trace one of {EVAL_TRACES}, '
                       f'got {self.field!r} and {self.eval_trace!r}.')
    if self.field == 'conv' and len(self.event_shape) != 3:
      raise ValueError(f"field='conv' needs images (H, W, C), got event_shape {self.event_shape}.")

    def init(rng):
      z = jnp.zeros((1, self.num_dims), jnp.float32)
      return self._field().init(rng, z, jnp.zeros([]))['params']
    # One pytree that the solver takes as an argument: the vector field is applied
    # as a pure function inside diffrax's loops.
    self.field_params = self.param('field', init)

  def _solve(self, z0: jax.Array, t0: float, t1: float,
             noise: jax.Array | None, with_logdet: bool = True) -> tuple[jax.Array, jax.Array]:
    """Solves (z, L) from t0 to t1 with L(t0) = 0: returns z(t1) [B, D] and L(t1) [B].

    dL/dt = tr(df/dz): exact when `noise` is None, else eps^T (df/dz) eps with eps =
    noise; not computed (L = 0) when not `with_logdet`.
    """
    field = self._field()

    def dynamics(t, state, args):
      params, eps = args
      z, _ = state
      f = lambda v: field.apply({'params': params}, v, t)
      if not with_logdet:
        return f(z), jnp.zeros(z.shape[0], jnp.float32)
      if eps is None:
        jacobians = jax.vmap(jax.jacfwd(lambda v: f(v[None])[0]))(z)  # [B, D, D]
        return f(z), jnp.trace(jacobians, axis1=1, axis2=2)
      dz, pullback = jax.vjp(f, z)
      return dz, jnp.sum(pullback(eps)[0] * eps, axis=-1)

    state = (z0, jnp.zeros(z0.shape[0], jnp.float32))
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(dynamics), diffrax.Dopri5(), t0=t0, t1=t1, dt0=None, y0=state,
        args=(self.field_params, noise),
        stepsize_controller=diffrax.PIDController(rtol=self.rtol, atol=self.atol),
        adjoint=diffrax.RecursiveCheckpointAdjoint(), max_steps=self.max_steps)
    z1, trace_integral = solution.ys
    return z1[0], trace_integral[0]

  def forward(self, x: jax.Array, noise: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Data -> noise: z = z(T) from z(0) = x.

    Args:
      x: [B, *event_shape] float, the flow's continuous space.
      noise: [B, D] Hutchinson probes (training), or None for the exact trace.

    Returns:
      z: [B, *event_shape] float32, and logdet [B] = log |det dz/dx| (an unbiased
      estimate of it when `noise` is given).
    """
    check_event_shape(x, self.event_shape)
    flat = x.reshape(x.shape[0], self.num_dims).astype(jnp.float32)
    z, logdet = self._solve(flat, 0.0, self.integration_time, noise)
    return z.reshape(x.shape), logdet

  def inverse(self, z: jax.Array, noise: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Noise -> data: x = z(0) from z(T) = z; shapes as `forward`, logdet = log |det dx/dz|."""
    check_event_shape(z, self.event_shape)
    flat = z.reshape(z.shape[0], self.num_dims).astype(jnp.float32)
    x, logdet = self._solve(flat, self.integration_time, 0.0, noise)
    return x.reshape(z.shape), logdet

  def __call__(self, x: jax.Array, y: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """A flow has no per-dimension outputs: its one pass is `log_prob`."""
    return self.log_prob(x, y, train=train)

  def log_prob(self, x: jax.Array, y: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """log p(x) in nats: [B] float32.

    train=True: the logdet by Hutchinson's estimator (Rademacher probes from the
    'noise' rng), an unbiased estimate of log p(x). train=False: the exact trace, or
    the same estimator when eval_trace='hutchinson'. Discrete data are dequantized
    with the 'dequantize' rng (see `to_flow_space`).

    Args:
      x: [B, *event_shape]: int levels in [0, num_levels), or float points.
      y: unused (unconditional).
      train: training (Hutchinson trace) or evaluation (`eval_trace`).
    """
    del y
    check_event_shape(x, self.event_shape)
    rng = None if self.num_levels is None else self.make_rng('dequantize')
    w, extra = to_flow_space(rng, x, self.num_levels, self.alpha)
    noise = None
    if train or self.eval_trace == 'hutchinson':
      noise = jax.random.rademacher(self.make_rng('noise'), (x.shape[0], self.num_dims), jnp.float32)
    z, logdet = self.forward(w, noise)
    return base.standard_normal_log_prob(z) + logdet + extra

  def sample(self, rng: jax.Array, num: int, y: jax.Array | None = None,
             temperature: float | jax.Array = 1.0) -> jax.Array:
    """x = inverse(z), z ~ N(0, temperature^2 I), solved without the trace term.

    Returns:
      [num, *event_shape]: int32 levels in [0, num_levels) for discrete data, float32
      points otherwise.
    """
    del y
    z = temperature * jax.random.normal(rng, (num, self.num_dims), jnp.float32)
    x, _ = self._solve(z, self.integration_time, 0.0, None, with_logdet=False)
    return from_flow_space(x.reshape(num, *self.event_shape), self.num_levels, self.alpha)


def _require_positive_float(name: str, value: Any) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
    raise ConfigError(f'--{name} must be a number > 0, got {value!r}.')
  return float(value)


def build(info: 'DatasetInfo', *, dtype: Any = jnp.float32,
          hidden_sizes: tuple[int, ...] = (64, 64, 64),
          activation: Literal['softplus', 'tanh'] = 'softplus',
          field: Literal['mlp', 'conv'] = 'mlp',
          eval_trace: Literal['exact', 'hutchinson'] = 'exact', integration_time: float = 1.0,
          rtol: float = 1e-5, atol: float = 1e-5, max_steps: int = 1000) -> FFJORD:
  """FFJORD for continuous points or dequantized images (flattened), unconditional.

  Args:
    info: metadata of a continuous dataset, or a discrete one (dequantized, logit space).
    dtype: computation dtype of the vector field.
    hidden_sizes: widths (mlp) or channels (conv) of the vector field's hidden layers
      (at least one, each >= 1).
    activation: the vector field's nonlinearity: 'softplus' or 'tanh'.
    field: 'mlp' (dense layers on the flattened example) or 'conv' (3x3 convolutions;
      needs images of shape (H, W, C)).
    eval_trace: the evaluation logdet: 'exact' (D products per step of the solver) or
      'hutchinson' (one, an unbiased estimate; for images).
    integration_time: T > 0, the length of the ODE's time interval.
    rtol: relative tolerance of the adaptive ODE solver (> 0).
    atol: absolute tolerance of the adaptive ODE solver (> 0).
    max_steps: the most steps of one ODE solve (>= 1); a solve that needs more fails.
  """
  if diffrax is None:
    raise ConfigError('ffjord needs the diffrax package: pip install diffrax.')
  hidden_sizes = require_positive_sizes('hidden_sizes', hidden_sizes)
  if not hidden_sizes:
    raise ConfigError('--hidden_sizes must list at least one hidden layer for the vector field.')
  field = require_choice('field', field, FIELDS)
  if field == 'conv' and len(info.shape) != 3:
    raise ConfigError(f'--field=conv needs images of shape (H, W, C), but {info.spec!r} has '
                      f'examples of shape {tuple(info.shape)}; use --field=mlp.')
  return FFJORD(
      event_shape=tuple(info.shape), num_levels=info.num_levels, dtype=dtype,
      hidden_sizes=hidden_sizes, activation=require_choice('activation', activation, tuple(ACTIVATIONS)),
      field=field, eval_trace=require_choice('eval_trace', eval_trace, EVAL_TRACES),
      integration_time=_require_positive_float('integration_time', integration_time),
      rtol=_require_positive_float('rtol', rtol), atol=_require_positive_float('atol', atol),
      max_steps=require_int('max_steps', max_steps))
