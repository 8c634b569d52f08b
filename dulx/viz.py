"""Pictures of samples and densities, written as PNG with Pillow."""

import math

import numpy as np
from PIL import Image

__all__ = ['image_grid', 'completion_tiles', 'density_image', 'save_png', 'samples_image',
           'grid_points', 'density_plot', 'latent_plot', 'to_image']


def image_grid(images: np.ndarray, num_levels: int, pad: int = 1) -> np.ndarray:
  """Tiles images into a near-square grid.

  Args:
    images: [N, H, W, C] integer levels in [0, num_levels), C in {1, 3}.
    num_levels: the number of levels, mapped linearly onto 0..255.
    pad: pixels of black border between tiles.

  Returns:
    [rows*(H+pad)+pad, cols*(W+pad)+pad, C] uint8.
  """
  n, h, w, c = images.shape
  cols = math.ceil(math.sqrt(n))
  rows = math.ceil(n / cols)
  pixels = np.round(images.astype(np.float64) * 255.0 / max(num_levels - 1, 1)).astype(np.uint8)
  grid = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, c), np.uint8)
  for i in range(n):
    r, q = divmod(i, cols)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = pixels[i]
  return grid


def density_image(table: np.ndarray, scale: int = 4) -> np.ndarray:
  """A [K] or [K, K] table of probabilities or counts as a uint8 heat image.

  2-D tables are drawn with the first axis horizontal and the second vertical
  (upwards), as in a scatter plot; 1-D tables as a bar chart. Values are scaled so
  the largest is white.
  """
  table = np.asarray(table, np.float64)
  top = table.max() if table.size and table.max() > 0 else 1.0
  if table.ndim == 1:
    height = 100
    bars = np.round(table / top * (height - 1)).astype(int)
    img = np.zeros((height, table.shape[0]), np.uint8)
    for i, b in enumerate(bars):
      img[height - 1 - b:, i] = 255
  elif table.ndim == 2:
    img = np.round(np.flipud(table.T) / top * 255.0).astype(np.uint8)
  else:
    raise ValueError(f'density_image takes a 1-D or 2-D table, got shape {table.shape}.')
  return np.kron(img, np.ones((scale, scale), np.uint8))


def samples_image(samples: np.ndarray, num_levels: int | None) -> np.ndarray:
  """The picture of a batch of samples: a grid for images, a 2-D/1-D histogram for points.

  Args:
    samples: [N, H, W, C] image levels, or [N, D] points with D in {1, 2}
      (integer levels when num_levels is set).
    num_levels: levels per dimension, or None for continuous points (then binned
      into 64 bins over their range).
  """
  if samples.ndim == 4:
    grid = image_grid(samples, num_levels or 256)
    scale = max(1, 256 // max(grid.shape[:2]))  # Small images are drawn large enough to see.
    return np.kron(grid, np.ones((scale, scale, 1), np.uint8))
  if samples.ndim == 2 and samples.shape[1] in (1, 2):
    if num_levels is None:
      lo, hi = samples.min(), samples.max()
      bins = 64
      samples = np.clip(((samples - lo) / max(hi - lo, 1e-12) * bins).astype(int), 0, bins - 1)
    else:
      bins = num_levels
    counts = np.zeros((bins,) * samples.shape[1])
    np.add.at(counts, tuple(samples.T), 1)
    return density_image(counts, scale=max(1, 256 // bins))
  raise ValueError(f'cannot draw samples of shape {samples.shape}.')


def completion_tiles(given: np.ndarray, given_mask: np.ndarray, completed: np.ndarray,
                     num_levels: int) -> np.ndarray:
  """One tile per image: the given part (the rest mid-grey), its completion, the image.

  Args:
    given: [N, H, W, C] levels of the images.
    given_mask: bool, like `given`: True where the sampler was given the level.
    completed: [N, H, W, C] levels the sampler returned.
    num_levels: levels per sub-pixel.

  Returns:
    [N, H, 3W + 2, C] float levels (mid-grey between the three), for `samples_image`.
  """
  grey = (num_levels - 1) / 2
  occluded = np.where(given_mask, given, grey)
  gap = np.full(given.shape[:2] + (1,) + given.shape[3:], grey)
  return np.concatenate([occluded, gap, completed, gap, given], axis=2).astype(np.float64)


def grid_points(bounds: tuple[float, float], num_dims: int, resolution: int = 128) -> np.ndarray:
  """The centres of a regular grid of resolution**D cells over [low, high]^D, D in {1, 2}.

  Returns:
    [resolution**D, D] float32 in C order (the last dimension varies fastest), so
    that values computed on the points reshape to a [resolution] * D table whose
    axis d is dimension d, as `density_plot` takes them.
  """
  if num_dims not in (1, 2):
    raise ValueError(f'grid_points draws 1-D or 2-D grids, got {num_dims} dimensions.')
  low, high = bounds
  step = (high - low) / resolution
  axis = low + step * (np.arange(resolution) + 0.5)
  mesh = np.meshgrid(*([axis] * num_dims), indexing='ij')
  return np.stack([m.reshape(-1) for m in mesh], axis=-1).astype(np.float32)


def density_plot(log_density: np.ndarray, num_dims: int) -> np.ndarray:
  """The picture of a density evaluated at the points of `grid_points`.

  Args:
    log_density: [resolution**D] log p at `grid_points(bounds, D, resolution)`.
    num_dims: D in {1, 2}.

  Returns:
    uint8 image about 256 pixels across: for D = 2 a heat map of p (white at its
    largest value; first dimension horizontal, second upwards), for D = 1 a bar chart.
  """
  log_density = np.asarray(log_density, np.float64)
  resolution = round(log_density.size ** (1.0 / num_dims))
  if num_dims not in (1, 2) or resolution**num_dims != log_density.size:
    raise ValueError(f'{log_density.size} values are not a {num_dims}-D grid.')
  finite = np.where(np.isfinite(log_density), log_density, -np.inf)
  density = np.exp(finite - finite.max()) if np.isfinite(finite.max()) else np.zeros_like(finite)
  table = density.reshape((resolution,) * num_dims)
  return density_image(table, scale=max(1, 256 // resolution))


def latent_plot(z: np.ndarray, bounds: tuple[float, float], bins: int = 64) -> np.ndarray:
  """The histogram of points pushed through a flow, z = forward(x), as a heat image.

  A flow that fits its data maps them onto its base density: uniform on the unit
  square for a CDF flow (bounds (0, 1)), a standard normal for Gaussian-base flows
  (bounds (-4, 4), say). Points outside the bounds are left out.

  Args:
    z: [N, D] float latent points, D in {1, 2}.
    bounds: (low, high) of the histogram on every axis.
    bins: bins per axis.

  Returns:
    uint8 image about 256 pixels across, as `density_image` draws a table.
  """
  z = np.asarray(z, np.float64)
  if z.ndim != 2 or z.shape[1] not in (1, 2):
    raise ValueError(f'latent_plot draws [N, 1] or [N, 2] points, got shape {z.shape}.')
  counts, _ = np.histogramdd(z, bins=bins, range=[bounds] * z.shape[1])
  return density_image(counts, scale=max(1, 256 // bins))


def to_image(image: np.ndarray) -> Image.Image:
  """A [H, W] or [H, W, 1|3] uint8 array as a Pillow image (a notebook displays it)."""
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  return Image.fromarray(image)


def save_png(path: str, image: np.ndarray) -> None:
  """Writes a [H, W] or [H, W, 1|3] uint8 array as PNG."""
  to_image(image).save(path)
