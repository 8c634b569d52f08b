"""Pictures of samples and densities, written as PNG with Pillow."""

import math

import numpy as np
from PIL import Image

__all__ = ['image_grid', 'density_image', 'save_png', 'samples_image']


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


def save_png(path: str, image: np.ndarray) -> None:
  """Writes a [H, W] or [H, W, 1|3] uint8 array as PNG."""
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  Image.fromarray(image).save(path)
