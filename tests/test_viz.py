"""Pictures: what each tile of a completion picture holds."""

import numpy as np

from dulx import viz


def test_completion_tiles_show_the_given_part_the_completion_and_the_image():
  rng = np.random.default_rng(0)
  given = rng.integers(0, 2, (3, 4, 5, 1))
  completed = rng.integers(0, 2, (3, 4, 5, 1))
  mask = np.broadcast_to(np.arange(4)[:, None, None] < 2, given.shape)
  tiles = viz.completion_tiles(given, mask, completed, num_levels=2)
  assert tiles.shape == (3, 4, 17, 1)
  np.testing.assert_array_equal(tiles[:, :2, :5], given[:, :2])
  np.testing.assert_array_equal(tiles[:, 2:, :5], 0.5)  # Not given: mid-grey.
  np.testing.assert_array_equal(tiles[:, :, 5], 0.5)
  np.testing.assert_array_equal(tiles[:, :, 6:11], completed)
  np.testing.assert_array_equal(tiles[:, :, 12:], given)
  picture = viz.samples_image(tiles, 2)
  assert picture.dtype == np.uint8 and set(np.unique(picture)) <= {0, 128, 255}
