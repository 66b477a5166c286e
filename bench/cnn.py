"""CNN dose-rate inference per volume: ``predict_dose_rate`` against the unoptimised baseline, same run, same inputs.

Baseline: float32, one 11-slice pack per forward pass, autograd bookkeeping on (``torch.no_grad`` off), the published
layers applied one after the other in torch's default memory layout: what a straightforward loop over slices does.
Optimised: ``predict_dose_rate`` (its default batch, ``torch.inference_mode``, the network's channels-last 3D
convolutions in eval mode, ``DepthFeatureExtractor.forward``, ``for_inference``: BatchNorm folded into the
convolutions, the depth pool as a max of slice pairs, and the first convolution shared between neighbouring packs,
``_inference._FirstConvolution``).
Grids: ``compact`` (130x128x128 at 3.0x3.91x3.91 mm) and ``paper`` (130x512x512 at 3.0x0.98x0.98 mm). The network
is a seeded, untrained DblurDoseNet written to a temporary model card: run time does not depend on weight values.
The baseline is timed on a subset of slices and extrapolated to the volume (per-slice cost is constant); the table
says how many slices it ran. Inputs are a synthetic smooth activity blob, not patient data.

On the CPU each grid is measured with every torch intra-op thread count of ``--threads`` (on a machine shared with
other processes, one thread can beat two: spinning OpenMP threads lose their core). With ``--device cuda`` both
paths run on the GPU, the baseline in float32 and ``predict_dose_rate`` as it runs there (autocast, batches of
packs); the times include copying the volumes to the GPU and the result back.

Run: ``.venv/bin/python bench/cnn.py [--device cpu|cuda] [--grids compact paper] [--threads 1 2]
[--baseline-slices 13] [--batch-size N]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cohort_dosimetry.grid import GRIDS
from cohort_dosimetry.model import DblurDoseNet, ModelCard, load_model, make_packs, predict_dose_rate, save_model


def _volumes(shape):
    z, y, x = (np.linspace(-1, 1, n, dtype=np.float32) for n in shape)
    r2 = z[:, None, None] ** 2 + y[None, :, None] ** 2 + x[None, None, :] ** 2
    spect = (1e5 * np.exp(-r2 / 0.1)).astype(np.float32)
    density = np.where(r2 < 0.8, 1.04, 0.001).astype(np.float32)
    return spect, density, spect * 1e-11


def _card(tmp: Path, spacing) -> Path:
    torch.manual_seed(0)
    card = ModelCard(
        spacing_mm=spacing,
        spect_scale=1e4,
        dose_rate_scale=1e7,
        training_data={"description": "untrained benchmark network"},
        training={},
        validation_metrics={},
    )
    return save_model(DblurDoseNet(), card, tmp / f"bench_{spacing[1]}.json")


def _default_layout_forward(model, pack, prior):
    """The network's layers one by one in torch's default (contiguous) layout: the forward pass without the
    channels-last convolutions of ``DepthFeatureExtractor.forward``."""
    x = pack
    for layer in model.depth_features:
        x = layer(x)
    return model.unet(x.squeeze(2)) + prior


def _baseline_s_per_slice(card_path, spect, density, dvk, n_slices, device) -> float:
    model, card = load_model(card_path)
    model.to(device)
    total = spect.sum(dtype=np.float64)
    centres = np.linspace(0, spect.shape[0] - 1, n_slices).astype(int)
    sp = make_packs(spect / total * card.spect_scale, 11, centres)
    de = make_packs(density, 11, centres)
    plane = spect.shape[1:]
    zeros = lambda *shape: torch.zeros(shape, device=device)  # noqa: E731
    _default_layout_forward(model, zeros(1, 2, 11, *plane), zeros(1, 1, *plane)).detach().cpu()  # warm-up
    start = time.perf_counter()
    for k, z in enumerate(centres):
        pack = torch.from_numpy(np.stack([sp[k], de[k]])[None].astype(np.float32)).to(device)
        prior = torch.from_numpy((dvk[z] / total * card.dose_rate_scale)[None, None].astype(np.float32)).to(device)
        out = _default_layout_forward(model, pack, prior)
        out.detach().clamp_min(0).cpu().numpy()
    return (time.perf_counter() - start) / n_slices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    parser.add_argument("--baseline-slices", type=int, default=13)
    parser.add_argument("--batch-size", type=int, default=None, help="default: predict_dose_rate's")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU only")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    where = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(
        f"torch {torch.__version__}, device {where}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}; synthetic inputs"
    )
    thread_counts = args.threads if args.device == "cpu" else [torch.get_num_threads()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for grid in args.grids:
            shape, spacing = GRIDS[grid].shape, GRIDS[grid].spacing_mm
            card_path = _card(Path(tmp), spacing)
            spect, density, dvk = _volumes(shape)
            for threads in thread_counts:
                torch.set_num_threads(threads)
                predict_dose_rate(
                    spect[:11],
                    density[:11],
                    dvk[:11],
                    spacing,
                    weights=card_path,  # warm-up
                    device=args.device,
                )
                per_slice = _baseline_s_per_slice(card_path, spect, density, dvk, args.baseline_slices, args.device)
                start = time.perf_counter()
                predict_dose_rate(
                    spect, density, dvk, spacing, weights=card_path, device=args.device, batch_size=args.batch_size
                )
                optimised = time.perf_counter() - start
                baseline = per_slice * shape[0]
                rows.append((grid, "x".join(map(str, shape)), threads, baseline, args.baseline_slices, optimised))
    print(
        f"{'grid':8} {'shape':12} {'threads':>7} {'baseline s/vol':>15} {'(slices run)':>13} "
        f"{'predict s/vol':>14} {'speed-up':>9}"
    )
    for grid, shape, threads, baseline, n, optimised in rows:
        print(
            f"{grid:8} {shape:12} {threads:7d} {baseline:15.1f} {n:13d} {optimised:14.1f} {baseline / optimised:9.2f}"
        )


if __name__ == "__main__":
    main()
