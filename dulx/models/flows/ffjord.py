"""FFJORD: continuous normalizing flows (Grathwohl et al. 2019).

One block of the flow is the solution map of an ODE: z(0) = x, dz/dt = f(z(t), t) for t
in [0, T], z = z(T). By the instantaneous change of variables (Chen et al. 2018, Thm. 1),

    log |det dz(T)/dx| = integral_0^T tr(df/dz(z(t), t)) dt,

so the ODE is solved for the augmented state (z, L), dL/dt = tr(df/dz), and the block's
logdet is L(T). The inverse solves the same ODE from T back to 0. f is a stack of
"concat-squash" layers, time entering every layer as a gate and a bias:
h' = (W h + b) * sigmoid(a t + c) + e t. W is a dense layer on the flattened state
(`field='mlp'`, FFJORD's toy architecture) or, for images, a 3x3 convolution on the
state seen as an [H, W, C] image (`field='conv'`, FFJORD's image layers), so the field
is local and its size does not grow with the image.

The flow is `blocks_per_scale` such blocks in sequence, each with its own vector field,
or, for images, FFJORD's multi-scale architecture (that of its MNIST and CIFAR-10
results, `ODENVP` in its code; after RealNVP, Dinh et al. 2017, Sec. 3.6) with
`num_scales` > 1: each scale but the last is

    blocks on [H, W, C] -> squeeze to [H/2, W/2, 4C] -> blocks -> factor out half

and the last scale is blocks on its [H, W, C]. The factored-out half (the first 2C
channels, as `layers.FactorOut`) goes to the N(0, I) base unchanged; the other half is
the next scale's state. As in RealNVP's and Glow's flows in dulx, z has the data's
shape: each scale unsqueezes its factored and transformed halves back. Squeeze and
factor-out preserve volume, so log |det dz/dx| is the sum of the blocks' logdets.

The trace: in training, Hutchinson's estimator tr(J) = E[eps^T J eps] with one
Rademacher eps per block and example from the 'noise' rng, held fixed along the block's
solve (FFJORD Sec. 3.1): one vector-Jacobian product per evaluation of f instead of D.
In evaluation (train=False) the exact trace, from the full per-example Jacobian
(`eval_trace='exact'`, D forward-mode products per evaluation of f), or the same
estimator as in training (`eval_trace='hutchinson'`, for images, where D = 784
products per step would dominate): log p(x) is linear in the traces, so the mean of
the estimates over a test set is an unbiased estimate of its mean log-likelihood.

Each block's ODE is solved by diffrax (Dopri5 with an adaptive PID step-size
controller, `rtol`/`atol` options). Gradients (`adjoint`) by default use diffrax's
RecursiveCheckpointAdjoint ('checkpoint'): backpropagation through the solver's own
steps with checkpointing. It gives the exact gradient of the computed log-likelihood
(discretise-then-optimise), which the backsolve adjoint of Chen et al. ('backsolve')
only approximates by solving a second ODE backwards, and for the sizes dulx trains its
memory (the checkpoints) is small. 'backsolve' keeps memory constant in the number of
solver steps, and is the one of the two that runs under `jax.pmap` (--parallel=pmap):
diffrax's checkpointed loop does not trace there. Step sizes are chosen for the whole
batch (the error norm is over the batch's state), as in FFJORD.

Regularisation (RNODE: Finlay et al. 2020, "How to train your neural ODE"): the field
that maximum likelihood learns is free to be stiff and to wander, so the adaptive
solver's step count, and with it the cost of a step, grows as training goes. With
`kinetic_weight` lambda_K or `jacobian_weight` lambda_J > 0, training adds

    lambda_K * int_0^T mean_d f_d(z(t), t)^2 dt + lambda_J * int_0^T mean_d (eps^T df/dz)_d^2 dt

per block (batch means) to the loss: the kinetic energy of the flow's particles, which
optimal transport minimises (straight, constant-speed paths), and Hutchinson's estimate
of the Jacobian's squared Frobenius norm, E ||eps^T J||^2 = ||J||_F^2, from the product
the trace estimate already computes. Both ride along in the ODE's state. The means over
dimensions put the penalties on the loss's own per-dimension scale. The likelihood
itself is unchanged (maps of any kinetic energy can reach the same densities); the
penalties pick, among them, the ones that are cheap to solve. Train metrics report
each penalty and `ode_steps`, the solver's accepted-and-rejected step count summed over
the blocks.

Images are dequantized and mapped to logit space as for MAF
(`dulx.models.flows.autoregressive.to_flow_space`), with every Jacobian counted.
"""

from collections.abc import Sequence
import importlib.util
import math
from typing import Any, Literal, TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

from dulx.errors import ConfigError
from dulx.models import (check_event_shape, require_choice, require_int, require_number,
                         require_positive_sizes)
from dulx.models.flows import base
from dulx.models.flows.autoregressive import from_flow_space, to_flow_space
from dulx.models.flows.image_flow import require_squeezable
from dulx.models.flows.layers import squeeze, unsqueeze
from dulx.nn.conv import Conv

if TYPE_CHECKING:
  from dulx.data import DatasetInfo

__all__ = ['ACTIVATIONS', 'ADJOINTS', 'EVAL_TRACES', 'FIELDS', 'FFJORD', 'VectorField', 'build']

ACTIVATIONS = {'softplus': nn.softplus, 'tanh': jnp.tanh}
FIELDS = ('mlp', 'conv')
EVAL_TRACES = ('exact', 'hutchinson')
ADJOINTS = ('checkpoint', 'backsolve')


class ConcatSquash(nn.Module):
  """h' = (W h + b) * sigmoid(a t + c) + e t: a layer W gated and shifted by time.

  W is dense on [B, F] inputs, or a 3x3 'SAME' convolution on [B, H, W, C] images when
  `conv` (gate and shift then act per channel): `dulx.nn.Conv`, whose gradients stay
  fast inside the solver's loops on a CPU.
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
      linear = Conv(self.features, (3, 3), dtype=self.dtype, name='linear')
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
  """Continuous normalizing flows with a standard normal base, as a likelihood model.

  `forward`/`inverse` act on the flow's continuous space, [B, *event_shape]: the points
  themselves for continuous data, logits of dequantized values for discrete data.

  Attributes:
    event_shape: shape of one example; D = its size, flattened in C order.
    num_levels: L for discrete data (dequantized), None for continuous points.
    num_classes: unused (unconditional); None by the model contract.
    dtype: computation dtype of the vector fields (the ODE state is float32).
    hidden_sizes: widths (field='mlp') or channels (field='conv') of each vector
      field's hidden layers.
    activation: 'softplus' or 'tanh' (smooth, so the ODE is well posed).
    field: 'mlp' (dense layers on the flattened state) or 'conv' (3x3 convolutions
      on the state as an image; event_shape must be (H, W, C)).
    eval_trace: the logdet in evaluation: 'exact' or 'hutchinson' (an unbiased
      estimate, one Rademacher probe per block and example from the 'noise' rng).
    integration_time: T, of every block.
    rtol: relative tolerance of the adaptive solver.
    atol: absolute tolerance of the adaptive solver.
    max_steps: the most solver steps of one solve (a bound that reverse-mode needs).
    alpha: the logit map's margin for discrete data.
    num_scales: scales of the multi-scale architecture (> 1 needs field='conv' and H,
      W divisible by 2^(num_scales - 1)); 1: the blocks act on the whole example.
    blocks_per_scale: blocks at each scale's resolution, and as many again after each
      squeeze (FFJORD's n_blocks); each block is its own ODE with its own field.
    kinetic_weight: lambda_K of RNODE's kinetic-energy penalty (0: none).
    jacobian_weight: lambda_J of RNODE's Jacobian Frobenius-norm penalty (0: none).
    adjoint: how gradients pass through a solve: 'checkpoint' (exact, through the
      solver's steps) or 'backsolve' (the continuous adjoint ODE, approximate).
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
  num_scales: int = 1
  blocks_per_scale: int = 1
  kinetic_weight: float = 0.0
  jacobian_weight: float = 0.0
  adjoint: str = 'checkpoint'

  @property
  def num_dims(self) -> int:
    return math.prod(self.event_shape)

  @property
  def pmap_unsupported(self) -> str | None:
    """Why this model cannot train under `jax.pmap`, or None: read by the harness."""
    if self.adjoint == 'checkpoint':
      return ("ffjord's default --adjoint=checkpoint (diffrax's checkpointed loop) does not "
              'trace under jax.pmap; use --parallel=jit (the same update over the same '
              'devices) or --adjoint=backsolve.')
    return None

  @property
  def log_prob_is_bound(self) -> bool:
    """Whether `log_prob` is one draw of a stochastic lower bound on log P(x) (the
    dequantization bound), which `dulx.eval.importance` tightens: read by the harness.
    Not with eval_trace='hutchinson': the trace estimate's noise enters the exponent,
    and the importance-weighted mean of its draws is no longer a bound."""
    return self.num_levels is not None and self.eval_trace == 'exact'

  @property
  def latent_bounds(self) -> tuple[float, float]:
    """A range holding nearly all of the N(0, I) base: for pictures of the latent space."""
    return -4.0, 4.0

  @property
  def block_shapes(self) -> tuple[tuple[int, ...], ...]:
    """The state's shape in each block, in forward order.

    Per scale but the last: blocks_per_scale of (H, W, C), then blocks_per_scale of the
    squeezed (H/2, W/2, 4C); the next scale's state is (H/2, W/2, 2C). The last scale:
    blocks_per_scale of its state's shape (the example's shape when num_scales = 1).
    """
    shapes, shape = [], tuple(self.event_shape)
    for _ in range(self.num_scales - 1):
      h, w, c = shape
      shapes += [shape] * self.blocks_per_scale + [(h // 2, w // 2, 4 * c)] * self.blocks_per_scale
      shape = (h // 2, w // 2, 2 * c)
    return tuple(shapes + [shape] * self.blocks_per_scale)

  def _field(self, shape: tuple[int, ...]) -> VectorField:
    """A block's vector field on states of `shape`, free-standing (parent=None): a pure function."""
    image_shape = shape if self.field == 'conv' else None
    return VectorField(math.prod(shape), tuple(self.hidden_sizes), self.activation, self.dtype,
                       image_shape=image_shape, parent=None)

  def setup(self):
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'activation must be one of {tuple(ACTIVATIONS)}, got {self.activation!r}.')
    if self.field not in FIELDS or self.eval_trace not in EVAL_TRACES:
      raise ValueError(f'field must be one of {FIELDS} and eval_trace one of {EVAL_TRACES}, '
                       f'got {self.field!r} and {self.eval_trace!r}.')
    if self.adjoint not in ADJOINTS:
      raise ValueError(f'adjoint must be one of {ADJOINTS}, got {self.adjoint!r}.')
    if self.field == 'conv' and len(self.event_shape) != 3:
      raise ValueError(f"field='conv' needs images (H, W, C), got event_shape {self.event_shape}.")
    if self.num_scales < 1 or self.blocks_per_scale < 1:
      raise ValueError(f'num_scales and blocks_per_scale must be >= 1, got {self.num_scales} '
                       f'and {self.blocks_per_scale}.')
    squeezes = 2**(self.num_scales - 1)
    if self.num_scales > 1 and (self.field != 'conv' or self.event_shape[0] % squeezes
                                or self.event_shape[1] % squeezes):
      raise ValueError(f"num_scales={self.num_scales} needs field='conv' and height and width "
                       f'divisible by {squeezes}, got {self.field!r} and {self.event_shape}.')

    def init(rng):
      keys = jax.random.split(rng, len(self.block_shapes))
      return {f'block_{k}': self._field(shape).init(
                  key, jnp.zeros((1, math.prod(shape)), jnp.float32), jnp.zeros([]))['params']
              for k, (key, shape) in enumerate(zip(keys, self.block_shapes))}
    # One pytree, created here for forward and inverse alike, that the solver takes
    # as an argument: each block's field is applied as a pure function inside
    # diffrax's loops.
    self.field_params = self.param('fields', init)

  @property
  def regularized(self) -> bool:
    """Whether training adds RNODE's penalties (a weight > 0)."""
    return self.kinetic_weight > 0 or self.jacobian_weight > 0

  def _solve(self, block: int, z0: jax.Array, t0: float, t1: float, noise: jax.Array | None,
             with_logdet: bool = True,
             regularize: bool = False) -> tuple[jax.Array, jax.Array]:
    """Solves block `block`'s (z, L) from t0 to t1 with L(t0) = 0: z(t1) and L(t1) [B].

    z0: [B, *block_shapes[block]]; dL/dt = tr(df/dz): exact when `noise` is None, else
    eps^T (df/dz) eps with eps = noise (of z0's shape); not computed (L = 0) when not
    `with_logdet`.

    With `regularize` (needs `noise`), the state also carries RNODE's integrals
    K = int mean_d f_d^2 dt and J = int mean_d (eps^T df/dz)_d^2 dt, per example; their
    batch means times `kinetic_weight` and `jacobian_weight` are sown into 'losses'
    as 'kinetic_penalty' and 'jacobian_penalty'. The solver's step count is sown into
    'metrics' as 'ode_steps' (the harness sums both over blocks).
    """
    field = self._field(self.block_shapes[block])
    batch = z0.shape[0]
    if regularize and noise is None:
      raise ValueError("RNODE's penalties need Hutchinson probes (noise).")

    def dynamics(t, state, args):
      params, eps = args
      z = state[0]
      f = lambda v: field.apply({'params': params}, v, t)
      if not with_logdet:
        return f(z), jnp.zeros(batch, jnp.float32)
      if eps is None:
        # Reverse mode: the conv field's `dulx.nn.Conv` has no forward mode.
        jacobians = jax.vmap(jax.jacrev(lambda v: f(v[None])[0]))(z)  # [B, D, D]
        return f(z), jnp.trace(jacobians, axis1=1, axis2=2)
      dz, pullback = jax.vjp(f, z)
      row = pullback(eps)[0]  # eps^T df/dz: [B, D]
      trace = jnp.sum(row * eps, axis=-1)
      if not regularize:
        return dz, trace
      # E ||eps^T J||^2 = tr(J J^T) = ||J||_F^2: Hutchinson again, with the same product.
      return dz, trace, jnp.mean(dz**2, axis=-1), jnp.mean(row**2, axis=-1)

    eps = None if noise is None else noise.reshape(batch, -1)
    zeros = jnp.zeros(batch, jnp.float32)
    state = (z0.reshape(batch, -1).astype(jnp.float32), zeros) + ((zeros, zeros) if regularize else ())
    import diffrax  # Here, not at the top: see `build`.

    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(dynamics), diffrax.Dopri5(), t0=t0, t1=t1, dt0=None, y0=state,
        args=(self.field_params[f'block_{block}'], eps),
        stepsize_controller=diffrax.PIDController(rtol=self.rtol, atol=self.atol),
        adjoint=(diffrax.BacksolveAdjoint() if self.adjoint == 'backsolve'
                 else diffrax.RecursiveCheckpointAdjoint()),
        max_steps=self.max_steps)
    z1, trace_integral = solution.ys[:2]
    if not self.is_initializing():  # Keeps `init`'s variables free of per-pass values.
      self.sow('metrics', 'ode_steps', solution.stats['num_steps'])
    if regularize:
      kinetic, frobenius = (jnp.mean(y[0]) for y in solution.ys[2:])
      if self.kinetic_weight > 0:
        self.sow('losses', 'kinetic_penalty', self.kinetic_weight * kinetic)
      if self.jacobian_weight > 0:
        self.sow('losses', 'jacobian_penalty', self.jacobian_weight * frobenius)
    return z1[0].reshape(z0.shape), trace_integral[0]

  def _blocks(self, blocks: range, h: jax.Array, noise: Sequence[jax.Array] | None,
              inverse: bool, with_logdet: bool = True,
              regularize: bool = False) -> tuple[jax.Array, jax.Array]:
    """Blocks `blocks` in order on h [B, *their shape], or each inverted in reverse order.

    Returns h's image and the sum of the blocks' logdets [B].
    """
    logdet = jnp.zeros(h.shape[0], jnp.float32)
    t0, t1 = (self.integration_time, 0.0) if inverse else (0.0, self.integration_time)
    for k in (reversed(blocks) if inverse else blocks):
      h, block_logdet = self._solve(k, h, t0, t1, None if noise is None else noise[k], with_logdet,
                                    regularize)
      logdet = logdet + block_logdet
    return h, logdet

  def _scale_blocks(self, scale: int) -> tuple[range, range]:
    """Indices into `block_shapes` of a scale's blocks before and after its squeeze."""
    first = 2 * self.blocks_per_scale * scale
    middle = first + self.blocks_per_scale
    last = middle if scale == self.num_scales - 1 else middle + self.blocks_per_scale
    return range(first, middle), range(middle, last)

  def _forward_scale(self, scale: int, x: jax.Array, noise: Sequence[jax.Array] | None,
                     regularize: bool = False) -> tuple[jax.Array, jax.Array]:
    """Scale `scale` and the next ones: x [B, *its state's shape] -> (z like x, logdet [B])."""
    before, after = self._scale_blocks(scale)
    h, logdet = self._blocks(before, x, noise, inverse=False, regularize=regularize)
    if scale == self.num_scales - 1:
      return h, logdet
    h, after_logdet = self._blocks(after, squeeze(h), noise, inverse=False, regularize=regularize)
    k = h.shape[-1] // 2  # As layers.FactorOut: the first half goes to the base.
    inner, inner_logdet = self._forward_scale(scale + 1, h[..., k:], noise, regularize)
    z = unsqueeze(jnp.concatenate([h[..., :k], inner], axis=-1))
    return z, logdet + after_logdet + inner_logdet

  def _inverse_scale(self, scale: int, z: jax.Array, noise: Sequence[jax.Array] | None,
                     with_logdet: bool) -> tuple[jax.Array, jax.Array]:
    """The inverse of `_forward_scale`: z -> (x of z's shape, logdet [B] = log |det dx/dz|)."""
    before, after = self._scale_blocks(scale)
    logdet = jnp.zeros(z.shape[0], jnp.float32)
    if scale < self.num_scales - 1:
      h = squeeze(z)
      k = h.shape[-1] // 2
      inner, logdet = self._inverse_scale(scale + 1, h[..., k:], noise, with_logdet)
      h, after_logdet = self._blocks(after, jnp.concatenate([h[..., :k], inner], axis=-1), noise,
                                     inverse=True, with_logdet=with_logdet)
      z, logdet = unsqueeze(h), logdet + after_logdet
    x, before_logdet = self._blocks(before, z, noise, inverse=True, with_logdet=with_logdet)
    return x, logdet + before_logdet

  def forward(self, x: jax.Array,
              noise: Sequence[jax.Array] | None = None) -> tuple[jax.Array, jax.Array]:
    """Data -> noise through every block (and the multi-scale squeezes and factor-outs).

    Args:
      x: [B, *event_shape] float, the flow's continuous space.
      noise: Hutchinson probes (training), one per block, [B, *block_shapes[k]]; or
        None for the exact trace.

    Returns:
      z: [B, *event_shape] float32, and logdet [B] = log |det dz/dx|, the sum of the
      blocks' trace integrals (an unbiased estimate of it when `noise` is given).
    """
    check_event_shape(x, self.event_shape)
    return self._forward_scale(0, x.astype(jnp.float32), noise)

  def inverse(self, z: jax.Array,
              noise: Sequence[jax.Array] | None = None) -> tuple[jax.Array, jax.Array]:
    """Noise -> data, the inverse of `forward`; shapes as `forward`, logdet = log |det dx/dz|."""
    check_event_shape(z, self.event_shape)
    return self._inverse_scale(0, z.astype(jnp.float32), noise, with_logdet=True)

  def __call__(self, x: jax.Array, y: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """A flow has no per-dimension outputs: its one pass is `log_prob`."""
    return self.log_prob(x, y, train=train)

  def _probes(self, batch: int) -> tuple[jax.Array, ...]:
    """One Rademacher probe per block and example from the 'noise' rng: [B, *block_shapes[k]]."""
    keys = jax.random.split(self.make_rng('noise'), len(self.block_shapes))
    return tuple(jax.random.rademacher(key, (batch, *shape), jnp.float32)
                 for key, shape in zip(keys, self.block_shapes))

  def log_prob(self, x: jax.Array, y: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """log p(x) in nats: [B] float32, log N(z; 0, I) over all of z + logdet (+ preprocessing).

    train=True: the logdet by Hutchinson's estimator (Rademacher probes from the
    'noise' rng), an unbiased estimate of log p(x), and RNODE's penalties sown into
    'losses' when a weight is > 0 (see `_solve`). train=False: the exact trace, or
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
    noise = self._probes(x.shape[0]) if train or self.eval_trace == 'hutchinson' else None
    z, logdet = self._forward_scale(0, w, noise, regularize=train and self.regularized)
    return base.standard_normal_log_prob(z) + logdet + extra

  def sample(self, rng: jax.Array, num: int, y: jax.Array | None = None,
             temperature: float | jax.Array = 1.0) -> jax.Array:
    """x = inverse(z), z ~ N(0, temperature^2 I), solved without the trace terms.

    Returns:
      [num, *event_shape]: int32 levels in [0, num_levels) for discrete data, float32
      points otherwise.
    """
    del y
    z = temperature * jax.random.normal(rng, (num, *self.event_shape), jnp.float32)
    x, _ = self._inverse_scale(0, z, None, with_logdet=False)
    return from_flow_space(x, self.num_levels, self.alpha)


def build(info: 'DatasetInfo', *, dtype: Any = jnp.float32,
          hidden_sizes: tuple[int, ...] = (64, 64, 64),
          activation: Literal['softplus', 'tanh'] = 'softplus',
          field: Literal['mlp', 'conv'] = 'mlp',
          eval_trace: Literal['exact', 'hutchinson'] = 'exact', integration_time: float = 1.0,
          rtol: float = 1e-5, atol: float = 1e-5, max_steps: int = 1000, num_scales: int = 1,
          blocks_per_scale: int = 1, kinetic_weight: float = 0.0,
          jacobian_weight: float = 0.0,
          adjoint: Literal['checkpoint', 'backsolve'] = 'checkpoint') -> FFJORD:
  """FFJORD for continuous points or dequantized images, unconditional.

  Args:
    info: metadata of a continuous dataset, or a discrete one (dequantized, logit space).
    dtype: computation dtype of the vector fields.
    hidden_sizes: widths (mlp) or channels (conv) of each vector field's hidden layers
      (at least one, each >= 1).
    activation: the vector fields' nonlinearity: 'softplus' or 'tanh'.
    field: 'mlp' (dense layers on the flattened example) or 'conv' (3x3 convolutions;
      needs images of shape (H, W, C)).
    eval_trace: the evaluation logdet: 'exact' (D products per step of the solver) or
      'hutchinson' (one, an unbiased estimate; for images).
    integration_time: T > 0, the length of each block's ODE time interval.
    rtol: relative tolerance of the adaptive ODE solver (> 0).
    atol: absolute tolerance of the adaptive ODE solver (> 0).
    max_steps: the most steps of one ODE solve (>= 1); a solve that needs more fails.
    num_scales: scales of FFJORD's multi-scale architecture (>= 1; > 1 needs
      --field=conv and height and width divisible by 2^(num_scales - 1)).
    blocks_per_scale: CNF blocks at each scale's resolution and again after each
      squeeze (>= 1); each is its own ODE solve with its own vector field.
    kinetic_weight: RNODE's kinetic-energy penalty weight (>= 0; 0: none), on the
      integral of mean_d f_d^2 per block; keeps the solver's step count down.
    jacobian_weight: RNODE's Jacobian Frobenius-norm penalty weight (>= 0; 0: none),
      on the integral of mean_d (eps^T df/dz)_d^2 per block.
    adjoint: gradients through each solve: 'checkpoint' (diffrax's recursive
      checkpointing, the exact gradient of the computed NLL) or 'backsolve' (Chen et
      al.'s adjoint ODE solved backwards: approximate, memory constant in the solver's
      steps; needed for --parallel=pmap).
  """
  # Model discovery imports every model; diffrax is imported where a solve is traced
  # (a third of a second saved for every other model's script), and missing, reported here.
  if importlib.util.find_spec('diffrax') is None:
    raise ConfigError('ffjord needs the diffrax package: pip install diffrax.')
  hidden_sizes = require_positive_sizes('hidden_sizes', hidden_sizes)
  if not hidden_sizes:
    raise ConfigError('--hidden_sizes must list at least one hidden layer for the vector field.')
  field = require_choice('field', field, FIELDS)
  if field == 'conv' and len(info.shape) != 3:
    raise ConfigError(f'--field=conv needs images of shape (H, W, C), but {info.spec!r} has '
                      f'examples of shape {tuple(info.shape)}; use --field=mlp.')
  num_scales = require_int('num_scales', num_scales)
  if num_scales > 1:
    if field != 'conv':
      raise ConfigError(f'--num_scales={num_scales} (the multi-scale architecture) needs '
                        f'--field=conv.')
    require_squeezable(tuple(info.shape), num_scales - 1, 'num_scales')
  return FFJORD(
      event_shape=tuple(info.shape), num_levels=info.num_levels, dtype=dtype,
      hidden_sizes=hidden_sizes,
      activation=require_choice('activation', activation, tuple(ACTIVATIONS)),
      field=field, eval_trace=require_choice('eval_trace', eval_trace, EVAL_TRACES),
      integration_time=require_number('integration_time', integration_time),
      rtol=require_number('rtol', rtol), atol=require_number('atol', atol),
      max_steps=require_int('max_steps', max_steps), num_scales=num_scales,
      blocks_per_scale=require_int('blocks_per_scale', blocks_per_scale),
      kinetic_weight=require_number('kinetic_weight', kinetic_weight, allow_zero=True),
      jacobian_weight=require_number('jacobian_weight', jacobian_weight, allow_zero=True),
      adjoint=require_choice('adjoint', adjoint, ADJOINTS))
