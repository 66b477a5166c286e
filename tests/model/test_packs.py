"""11-slice packs with replicate padding of the first and last slice."""

import numpy as np
import pytest
import torch

from cohort_dosimetry.model import make_packs


def test_hand_built_tiny_case():
    volume = np.arange(4, dtype=np.float32).reshape(4, 1, 1) * np.ones((1, 2, 3), np.float32)
    packs = make_packs(volume, 5)
    expected = [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [0, 1, 2, 3, 3], [1, 2, 3, 3, 3]]
    assert packs.shape == (4, 5, 2, 3)
    np.testing.assert_array_equal(packs[:, :, 0, 0], expected)
    np.testing.assert_array_equal(packs[:, :, 1, 2], expected)


def test_eleven_slice_packs_of_a_short_volume_and_torch_input(rng):
    volume = rng.random((3, 4, 5), dtype="float32")
    packs = make_packs(volume, 11)
    assert packs.shape == (3, 11, 4, 5)
    np.testing.assert_array_equal(packs[0, :6], np.repeat(volume[:1], 6, axis=0))  # 5 replicas + centre
    np.testing.assert_array_equal(packs[1, 5], volume[1])
    np.testing.assert_array_equal(packs[2, 5:], np.repeat(volume[2:], 6, axis=0))
    np.testing.assert_array_equal(make_packs(torch.from_numpy(volume), 11).numpy(), packs)


def test_subset_of_centres_matches_full_packs(rng):
    volume = rng.random((9, 2, 2), dtype="float32")
    np.testing.assert_array_equal(make_packs(volume, 11, centres=[0, 4, 8]), make_packs(volume, 11)[[0, 4, 8]])


@pytest.mark.parametrize("depth", [0, 4])
def test_even_or_empty_depth_is_refused(depth):
    with pytest.raises(ValueError, match="odd"):
        make_packs(np.zeros((3, 2, 2)), depth)


def test_non_volume_is_refused():
    with pytest.raises(ValueError, match=r"\(z, y, x\)"):
        make_packs(np.zeros((3, 2)), 11)
