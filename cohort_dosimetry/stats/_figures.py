"""Figures of the cohort report (matplotlib, Agg backend): DRVHs, the joint histogram of two methods, time curves.

Every function returns a :class:`matplotlib.figure.Figure` (created without pyplot, so nothing opens a window and
figures are freed with their last reference). Dose-rates are plotted in mGy/h (1 Gy/s = 3.6e6 mGy/h) and absorbed
doses in Gy; axis labels say so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from ._time_integration import TimeActivityFit

#: mGy/h per Gy/s.
MGY_PER_H_PER_GY_PER_S = 3.6e6

#: One colour per dose-rate method, the same in every figure.
METHOD_COLOURS = {"dvk": "tab:blue", "cnn": "tab:orange", "mc": "tab:green"}


def _figure(n_panels: int, columns: int = 4, panel_size=(3.2, 2.6)) -> tuple[Figure, list]:
    columns = max(1, min(columns, n_panels))
    rows = math.ceil(n_panels / columns)
    figure = Figure(figsize=(panel_size[0] * columns, panel_size[1] * rows + 0.4))
    FigureCanvasAgg(figure)
    # Fixed margins: constrained layout costs more than the drawing itself on a cohort's worth of panels.
    figure.subplots_adjust(
        left=0.07,
        right=0.98,
        bottom=0.4 / (panel_size[1] * rows + 0.4) + 0.08 / rows,
        top=1 - 0.4 / (panel_size[1] * rows + 0.4) - 0.02,
        wspace=0.35,
        hspace=0.6,
    )
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return figure, list(axes[:n_panels])


def plot_drvh(curves: Mapping[str, xr.DataArray], title: str = "") -> Figure:
    """Dose-rate volume histograms: one panel per VOI, one line per method.

    ``curves``: {method: volume fraction (voi, dose_rate) as :func:`drvh` returns, dose_rate in Gy/s}; the VOIs of
    the first method are plotted.
    """
    methods = list(curves)
    vois = [str(v) for v in curves[methods[0]].voi.values]
    figure, axes = _figure(len(vois))
    for ax, voi in zip(axes, vois):
        top = 0.0
        for method in methods:
            curve = curves[method].sel(voi=voi)
            levels = curve.dose_rate.values * MGY_PER_H_PER_GY_PER_S
            ax.plot(levels, 100 * curve.values, color=METHOD_COLOURS.get(method), label=method.upper())
            reached = levels[np.nan_to_num(curve.values) > 0]
            top = max(top, reached.max() if reached.size else 0.0)
        if top > 0:
            ax.set_xlim(0, top * 1.05)  # each VOI on its own dose-rate scale
        ax.set_title(voi, fontsize=9)
        ax.set_xlabel("dose-rate (mGy/h)", fontsize=8)
        ax.set_ylabel("volume (%)", fontsize=8)
        ax.set_ylim(0, 102)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def plot_joint_histogram(
    counts: np.ndarray,
    edges_a: np.ndarray,
    edges_b: np.ndarray,
    label_a: str,
    label_b: str,
    pearson_r2: float,
    ccc: float,
    title: str = "",
) -> Figure:
    """Joint histogram of two methods' voxel dose-rates, log colour scale, with the identity line, R^2 and CCC.

    ``counts`` (len(edges_a) - 1, len(edges_b) - 1) voxel counts; ``edges_*`` in Gy/s; ``label_a`` is plotted on
    the y axis, ``label_b`` (the reference) on the x axis.
    """
    figure = Figure(figsize=(5.2, 4.4))
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0.14, right=0.97, bottom=0.12, top=0.92)
    ax = figure.subplots()
    density = counts.T.astype(np.float64)
    density[density == 0] = np.nan
    scale_a, scale_b = edges_a * MGY_PER_H_PER_GY_PER_S, edges_b * MGY_PER_H_PER_GY_PER_S
    finite = density[np.isfinite(density)]
    mesh = ax.pcolormesh(
        scale_b,
        scale_a,
        density,
        cmap="viridis",
        norm=LogNorm(vmin=1, vmax=max(float(finite.max()) if finite.size else 1.0, 2.0)),
    )
    figure.colorbar(mesh, ax=ax, label="voxels per bin")
    top = min(scale_a[-1], scale_b[-1])
    ax.plot([0, top], [0, top], color="white", lw=0.8, ls="--", label="identity")
    ax.set_xlabel(f"{label_b} dose-rate (mGy/h)")
    ax.set_ylabel(f"{label_a} dose-rate (mGy/h)")
    ax.text(
        0.03,
        0.97,
        f"Pearson $R^2$ = {pearson_r2:.3f}\nLin's CCC = {ccc:.3f}",
        transform=ax.transAxes,
        va="top",
        fontsize=9,
        color="black",
        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
    )
    ax.set_facecolor("#f4f4f4")
    if title:
        ax.set_title(title, fontsize=10)
    return figure


def plot_time_activity(fits: Mapping[str, TimeActivityFit], title: str = "") -> Figure:
    """Mean dose-rate against time with every applied model; one panel per VOI, the chosen model drawn solid.

    ``fits``: {VOI name: :class:`TimeActivityFit`} (dose-rates in Gy/s, hours post injection).
    """
    figure, axes = _figure(len(fits))
    styles = {"mono_exp": ":", "bi_exp": "-.", "trapezoid": "--", "hanscheid": "--", "madsen": "--"}
    for ax, (voi, fit) in zip(axes, fits.items()):
        t_max = max(float(fit.hours.max()) * 1.3, 24.0)
        t = np.linspace(0, t_max, 200)
        for model, model_fit in fit.fits.items():
            if not model_fit.fitted:
                continue
            chosen = model == fit.selected
            ax.plot(
                t,
                model_fit.dose_rate(t) * MGY_PER_H_PER_GY_PER_S,
                ls="-" if chosen else styles[model],
                lw=1.8 if chosen else 0.9,
                color="black" if chosen else "grey",
                label=f"{model} {model_fit.absorbed_dose_gy:.3g} Gy" + (" (chosen)" if chosen else ""),
            )
        ax.plot(fit.hours, fit.dose_rate_gy_s * MGY_PER_H_PER_GY_PER_S, "o", color="tab:red", ms=4)
        ax.set_title(voi, fontsize=9)
        ax.set_xlabel("hours post injection", fontsize=8)
        ax.set_ylabel("mean dose-rate (mGy/h)", fontsize=8)
        ax.set_xlim(0, t_max)
        ax.set_ylim(bottom=0)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def plot_dvh(dvh, title: str = "") -> Figure:
    """Cumulative dose-volume histograms of absorbed dose: one panel per VOI, one line per method.

    ``dvh``: rows of the ``dose_volume_histograms`` table of one patient and cycle (``voi``, ``method``, ``dose_gy``,
    ``volume_fraction``).
    """
    vois = list(dict.fromkeys(dvh["voi"]))
    figure, axes = _figure(len(vois))
    for ax, (voi, rows) in zip(axes, ((v, dvh[dvh["voi"] == v]) for v in vois)):
        top = 0.0
        for method, curve in rows.groupby("method", sort=False):
            levels = curve["dose_gy"].to_numpy()
            fraction = curve["volume_fraction"].to_numpy()
            ax.plot(levels, 100 * fraction, color=METHOD_COLOURS.get(str(method)), label=str(method).upper())
            reached = levels[np.nan_to_num(fraction) > 0]
            top = max(top, reached.max() if reached.size else 0.0)
        if top > 0:
            ax.set_xlim(0, top * 1.05)
        ax.set_title(voi, fontsize=9)
        ax.set_xlabel("absorbed dose (Gy)", fontsize=8)
        ax.set_ylabel("volume (%)", fontsize=8)
        ax.set_ylim(0, 102)
        ax.tick_params(labelsize=7)
    if axes:
        axes[0].legend(fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def plot_dose_maps(maps: Mapping[str, np.ndarray], spacing_mm, title: str = "") -> Figure:
    """One coronal slice (z, x) of each method's absorbed-dose map (Gy), on one colour scale.

    ``maps``: {method: (z, x) slice in Gy}, superior up; ``spacing_mm``: (z, y, x) of the grid.
    """
    figure, axes = _figure(len(maps), columns=len(maps), panel_size=(3.4, 3.6))
    top = max(float(np.nanmax(m)) for m in maps.values()) or 1.0
    extent = None
    for ax, (method, image) in zip(axes, maps.items()):
        nz, nx = image.shape
        extent = (0, nx * spacing_mm[2], 0, nz * spacing_mm[0])
        shown = ax.imshow(image, origin="lower", extent=extent, cmap="inferno", vmin=0.0, vmax=top)
        ax.set_title(method.upper(), fontsize=9)
        ax.set_xlabel("x (mm)", fontsize=8)
        ax.set_ylabel("z (mm)", fontsize=8)
        ax.tick_params(labelsize=7)
    bar = figure.colorbar(shown, ax=axes, shrink=0.8)
    bar.set_label("absorbed dose (Gy)", fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure
