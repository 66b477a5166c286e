"""Slice packs: every axial slice with its neighbours, the network's input unit (Li et al., Med Phys 49:1216, 2022)."""

from __future__ import annotations

import numpy as np
import torch


def pack_indices(n_slices: int, depth: int, centres=None) -> np.ndarray:
    """(len(centres), depth) int64 slice indices of the packs centred on ``centres`` (default: every slice).

    Out-of-volume neighbours are replaced by the first/last slice (replicate padding), as in the published model.
    """
    if depth % 2 != 1 or depth < 1:
        raise ValueError(f"pack depth must be odd and positive, got {depth}")
    if n_slices < 1:
        raise ValueError("a volume needs at least one slice to make packs")
    centres = np.arange(n_slices) if centres is None else np.asarray(centres, dtype=np.int64)
    half = depth // 2
    return np.clip(centres[:, None] + np.arange(-half, half + 1)[None, :], 0, n_slices - 1)


def make_packs(volume, depth: int = 11, centres=None):
    """Packs of ``depth`` consecutive slices around each centre slice.

    ``volume`` (z, y, x), numpy array or torch tensor -> (n_centres, depth, y, x) of the same kind, ``depth`` odd;
    pack ``i`` holds slices ``centre_i - depth//2 .. centre_i + depth//2`` in z order, the first/last slice repeated
    where the pack runs past the volume.
    """
    if volume.ndim != 3:
        raise ValueError(f"packs are built from a (z, y, x) volume, got shape {tuple(volume.shape)}")
    index = pack_indices(volume.shape[0], depth, centres)
    if isinstance(volume, torch.Tensor):
        return volume[torch.as_tensor(index, device=volume.device)]
    return np.asarray(volume)[index]
