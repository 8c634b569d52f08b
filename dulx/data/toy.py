"""Procedural low-dimensional densities: `toy2d:<name>` and `toy1d:<name>`.

The 2-D sets are the standard benchmarks of density estimation (two moons as in
scikit-learn's `make_moons`; eight Gaussians, checkerboard, rings and two spirals as
in Grathwohl et al. 2019, "FFJORD", and its predecessors), scaled so that all
of their mass lies well inside BOUNDS = (-4, 4): at least six noise standard
deviations from the edge. The 1-D set is a mixture of two Gaussians.

Every split is drawn from its own fixed seed (mixed with the set's name), so the
same spec and split always give the same array.
"""

from collections.abc import Callable
import zlib

import numpy as np

from dulx.data.dataset import Raw
from dulx.errors import DataError

__all__ = ['BOUNDS', 'SIZES', 'TOY1D', 'TOY2D', 'load']

BOUNDS = (-4.0, 4.0)
SIZES = {'train': 20000, 'test': 5000}
_SEEDS = {'train': 0, 'test': 1}


def two_moons(rng: np.random.Generator, n: int) -> np.ndarray:
  """Two interleaved half circles: (cos t, sin t) and (1 - cos t, 1/2 - sin t), t ~ U[0, pi].

  Centred, scaled by 1.5 (x in [-2.25, 2.25], y in [-1.125, 1.125]), plus N(0, 0.15^2) noise.
  """
  t = rng.uniform(0.0, np.pi, n)
  upper = rng.random(n) < 0.5
  x = np.where(upper, np.cos(t), 1.0 - np.cos(t)) - 0.5
  y = np.where(upper, np.sin(t), 0.5 - np.sin(t)) - 0.25
  return 1.5 * np.stack([x, y], axis=-1) + rng.normal(0.0, 0.15, (n, 2))


def eight_gaussians(rng: np.random.Generator, n: int) -> np.ndarray:
  """An equal mixture of N(c_k, 0.2^2 I), c_k = 2 (cos(k pi/4), sin(k pi/4)), k = 0..7."""
  angle = rng.integers(0, 8, n) * (np.pi / 4)
  centres = 2.0 * np.stack([np.cos(angle), np.sin(angle)], axis=-1)
  return centres + rng.normal(0.0, 0.2, (n, 2))


def checkerboard(rng: np.random.Generator, n: int) -> np.ndarray:
  """Uniform on the 8 cells (i, j), i + j even, of a 4x4 board of 1.5-wide cells on [-3, 3]^2."""
  i = rng.integers(0, 4, n)
  j = 2 * rng.integers(0, 2, n) + i % 2
  return -3.0 + 1.5 * (np.stack([i, j], axis=-1) + rng.random((n, 2)))


def rings(rng: np.random.Generator, n: int) -> np.ndarray:
  """Four concentric circles of radii 0.75, 1.5, 2.25, 3 with radial N(0, 0.08^2) noise.

  A ring is picked with probability proportional to its radius, so the density along
  the rings is uniform.
  """
  radii = np.array([0.75, 1.5, 2.25, 3.0])
  r = rng.choice(radii, n, p=radii / radii.sum()) + rng.normal(0.0, 0.08, n)
  t = rng.uniform(0.0, 2 * np.pi, n)
  return r[:, None] * np.stack([np.cos(t), np.sin(t)], axis=-1)


def spirals(rng: np.random.Generator, n: int) -> np.ndarray:
  """Two interleaved arms r (cos t, sin t) and its negation, t = 3 pi sqrt(u), r = t / pi.

  sqrt(u), u ~ U[0, 1], spreads points evenly along the arms; plus N(0, 0.1^2) noise.
  """
  t = 3 * np.pi * np.sqrt(rng.random(n))
  arm = np.where(rng.random(n) < 0.5, 1.0, -1.0)
  points = (arm * t / np.pi)[:, None] * np.stack([np.cos(t), np.sin(t)], axis=-1)
  return points + rng.normal(0.0, 0.1, (n, 2))


def bimodal(rng: np.random.Generator, n: int) -> np.ndarray:
  """0.35 N(-1.5, 0.4^2) + 0.65 N(1.5, 0.4^2): [n, 1]."""
  means = np.where(rng.random(n) < 0.35, -1.5, 1.5)
  return (means + rng.normal(0.0, 0.4, n))[:, None]


Sampler = Callable[[np.random.Generator, int], np.ndarray]
TOY2D: dict[str, Sampler] = {
    'two_moons': two_moons, 'eight_gaussians': eight_gaussians, 'checkerboard': checkerboard,
    'rings': rings, 'spirals': spirals}
TOY1D: dict[str, Sampler] = {'bimodal': bimodal}
_FAMILIES = {'toy2d': TOY2D, 'toy1d': TOY1D}


def load(family: str, name: str, split: str) -> Raw:
  """The whole `split` (a key of SIZES) of `family:name`: float32 [N, D] inside BOUNDS.

  Raises:
    DataError: an unknown set name.
  """
  sets = _FAMILIES[family]
  if name not in sets:
    raise DataError(f'unknown {family} set {name!r}; known: {", ".join(sets)}.')
  rng = np.random.default_rng([_SEEDS[split], zlib.crc32(name.encode())])
  return Raw(sets[name](rng, SIZES[split]).astype(np.float32), None, None, None, BOUNDS)
