"""Run the whole cohort flow (ingest, dose-rate maps, statistics, report) on a DICOM folder.

Tasks run on the embedded default (a Dask LocalCluster sized to this machine and Prefect's local mode) unless
--address names an existing Dask scheduler. A rerun computes only the maps the store does not hold for these
settings (weights, kernel, MC decays and seed, grid).
"""

from __future__ import annotations

import argparse
import sys

from cohort_dosimetry.constants import DEFAULT_DOSE_GRID, MC_DECAYS, MC_SCAN_RULES, METHODS
from cohort_dosimetry.grid import parse_dose_grid


def _grid(text: str) -> str:
    """--grid checked here, passed on as text (flow parameters are JSON)."""
    try:
        parse_dose_grid(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--grid: {error}") from None
    return text


def add_flow_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `run`, `serve` and `demo`."""
    parser.add_argument(
        "--methods", default="dvk,cnn,mc", help=f"comma-separated dose methods among {','.join(METHODS)} (default: all)"
    )
    parser.add_argument(
        "--address",
        default=None,
        help="Dask scheduler, e.g. tls://host:8786 (default: $DASK_SCHEDULER_ADDRESS, else embedded)",
    )
    parser.add_argument(
        "--tls-dir",
        action=_UseTlsDir,
        default=None,
        metavar="DIR",
        help="for a tls:// --address: folder with the CA and client certificate (ca.pem, client.pem, "
        "client.key; deploy/make-certs.sh makes them). Dask's DASK_DISTRIBUTED__COMM__TLS__* "
        "variables work as well",
    )
    parser.add_argument(
        "--grid",
        type=_grid,
        default=DEFAULT_DOSE_GRID,
        help=f"dose grid: compact, ct, or Z,Y,X spacing in mm (default {DEFAULT_DOSE_GRID})",
    )
    parser.add_argument(
        "--mc-scans",
        choices=MC_SCAN_RULES,
        default="all",
        help="run Monte Carlo on all scans, or on one scan per patient and therapy cycle: the earliest (first) or "
        "the one nearest 96 h after injection (nearest-96h), whose single-time-point absorbed dose holds",
    )
    parser.add_argument(
        "--mc-decays", type=int, default=MC_DECAYS, help=f"Monte Carlo decays per scan (default {MC_DECAYS})"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--roi-names",
        type=roi_names_file,
        default=None,
        metavar="FILE.toml",
        help="ROI-name mapping file extending the built-in clinical synonyms (see README)",
    )
    timeouts = parser.add_argument_group("timeouts (seconds; what times out fails, named in the run record)")
    timeouts.add_argument(
        "--connect-timeout",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="how long to try to reach the --address scheduler before giving up (default: 10)",
    )
    timeouts.add_argument(
        "--gpu-wait-timeout",
        type=_seconds,
        default=600.0,
        metavar="S",
        help="how long dose tasks wait for a GPU worker once the cluster has none left (it had "
        "GPU workers at the start; default: 600)",
    )
    timeouts.add_argument(
        "--task-timeout",
        type=_seconds,
        default=None,
        metavar="S",
        help="the longest an ingest or dose-rate task may run (default: no limit)",
    )
    timeouts.add_argument(
        "--lock-timeout",
        type=_seconds,
        default=None,
        metavar="S",
        help="the longest wait for a store lock held by another writer (default: "
        "$COHORT_DOSIMETRY_LOCK_TIMEOUT_S, else 600)",
    )
    add_uncertainty_arguments(parser)


def add_uncertainty_arguments(parser: argparse.ArgumentParser) -> None:
    """``--sensitivity-cps-per-mbq`` and ``--calibration-uncertainty`` (`run`, `serve` and `stats`)."""
    group = parser.add_argument_group(
        "absorbed-dose uncertainty (components of the absorbed_dose table, EANM 2018; not estimated when not given)"
    )
    group.add_argument(
        "--sensitivity-cps-per-mbq",
        type=_sensitivity,
        default=None,
        metavar="S",
        help="the camera's sensitivity for Lu-177 (counts per second per MBq, one head, as the site calibrated it): "
        "with each scan's acquisition duration from its NM header it gives the counts of every VOI and so the "
        "count-noise component (default: none, count noise not estimated)",
    )
    group.add_argument(
        "--calibration-uncertainty",
        type=_relative_uncertainty,
        default=None,
        metavar="U",
        help="relative standard uncertainty of the activity calibration, e.g. 0.05 for 5 %%; common to every scan "
        "(default: none; there is no default value, as 0 would claim a perfect calibration: the totals then leave "
        "the calibration out and the report says so)",
    )


def _number(what: str, valid, rule: str):
    """An argparse type: a float that ``valid(value)`` accepts, else an error naming ``what`` or the ``rule``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not valid(value):
            raise argparse.ArgumentTypeError(f"{rule}, got {text!r}")
        return value

    return parse


#: --sensitivity-cps-per-mbq, --calibration-uncertainty and the timeout options
_sensitivity = _number(
    "a number of cps/MBq", lambda v: 0 < v < float("inf"), "the camera sensitivity must be positive cps/MBq"
)
_relative_uncertainty = _number(
    "a relative uncertainty", lambda v: 0 <= v <= 1, "give the relative uncertainty as a fraction, e.g. 0.05 for 5 %"
)
_seconds = _number("a number of seconds", lambda v: v > 0, "a timeout must be positive seconds")


class _UseTlsDir(argparse.Action):
    """``--tls-dir``: applied as soon as it is parsed (Dask's TLS settings, exported to the environment), so that
    every command taking the flow options connects with it, and the flow runs that ``serve`` starts inherit it."""

    def __call__(self, parser, namespace, values, option_string=None):
        from flows import use_tls_dir

        try:
            use_tls_dir(values)
        except FileNotFoundError as err:
            parser.error(f"{option_string}: {err}")
        setattr(namespace, self.dest, values)


def roi_names_file(path: str) -> dict[str, str]:
    """``--roi-names``: the mapping read from the file; a bad file is a usage error naming the file and the entry."""
    from cohort_dosimetry.vocabulary import read_roi_names

    try:
        return read_roi_names(path)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def flow_parameters(args: argparse.Namespace) -> dict:
    return dict(
        dicom_dir=str(args.dicom_dir),
        cohort_dir=str(args.cohort_dir),
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        address=args.address,
        grid=args.grid,
        mc_scans=args.mc_scans,
        mc_decays=args.mc_decays,
        seed=args.seed,
        roi_names=args.roi_names,
        gpu_wait_timeout_s=args.gpu_wait_timeout,
        task_timeout_s=args.task_timeout,
        lock_timeout_s=args.lock_timeout,
        sensitivity_cps_per_mbq=args.sensitivity_cps_per_mbq,
        calibration_uncertainty=args.calibration_uncertainty,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dicom_dir")
    parser.add_argument("cohort_dir")
    add_flow_arguments(parser)


def print_summary(summary: dict) -> None:
    from cohort_dosimetry.stats import cohort_summary_table
    from cohort_dosimetry.store import open_cohort

    cohort = open_cohort(summary["cohort_dir"])
    table = cohort_summary_table(cohort.voi_stats())
    synthetic = [bool(cohort.scan_attrs(p, t).get("synthetic")) for p, t in cohort.scans()]
    origin = (
        "synthetic virtual patients, not patient data"
        if synthetic and all(synthetic)
        else f"{sum(synthetic)} of {len(synthetic)} scans are synthetic virtual patients"
    )
    print(f"\nCohort summary: dose-rate in mGy/h, mean (min-max) over scans and VOIs of each class ({origin}):")
    print(table.to_string())
    absorbed = cohort.absorbed_dose()
    if not absorbed.empty:  # which rule gave each method's absorbed doses (per curve: the absorbed_dose table)
        chosen = absorbed[absorbed["selected"].astype(bool)]
        print("\nAbsorbed dose per therapy cycle: time-integration model chosen, curves per method (none: no dose):")
        for method in [m for m in METHODS if m in set(chosen["method"])]:
            counts = chosen.loc[chosen["method"] == method, "model"].value_counts()
            print(f"  {method.upper()}: " + ", ".join(f"{model} {count}" for model, count in counts.items()))
    voxel = cohort.read_table("voxel_absorbed_dose")
    if not voxel.empty:  # the absorbed-dose maps of each cycle against the VOI-level result of the same curve
        registrations = cohort.read_table("registrations")
        print(
            f"\nAbsorbed-dose maps: {voxel[['patient', 'cycle']].drop_duplicates().shape[0]} cycles, "
            f"{len(registrations)} scans registered onto their cycle's first scan"
            + (
                f" (smallest Dice of warped contours {registrations['dice_min'].min():.3f})"
                if len(registrations)
                else ""
            )
            + "; map mean against the VOI-level dose (selected model | the voxel rule on the VOI mean curve), "
            "median (min to max) %:"
        )
        for (voi_type, method), rows in voxel.groupby(["voi_type", "method"]):
            print(
                f"  {voi_type:>9} {method.upper():>4}: "
                + " | ".join(
                    f"{d.median():+.1f} ({d.min():+.1f} to {d.max():+.1f})" if len(d) else "n/a"
                    for d in (rows[c].dropna() for c in ("difference_percent", "same_rule_difference_percent"))
                )
            )
    for note in summary.get("notes", []):
        print(f"note: {note}")
    print(
        f"\nscans: {summary['n_done']} computed, {summary['n_skipped']} already complete, {summary['n_failed']} failed"
        f" in {summary['wall_time_s']:.0f} s (run {summary['run_id']})"
    )
    print(f"report: {summary['report'] or 'none written: no scan has a dose-rate map'}")


def run(args: argparse.Namespace) -> int:
    from cohort_dosimetry.store import PseudonymKeyMismatch, open_cohort

    if args.address:  # a tls:// scheduler without a client certificate, or the reverse: refused before the flow starts
        from flows import check_scheduler_security

        try:
            check_scheduler_security(args.address)
        except ValueError as exc:
            print(f"cohort-dosimetry run: nothing done: {exc}", file=sys.stderr)
            return 2
        from flows import SchedulerUnreachable, cluster_workers

        try:  # an address nobody answers at fails here, after --connect-timeout, before any Prefect server starts
            cluster_workers(args.address, args.connect_timeout)
        except SchedulerUnreachable as exc:
            print(f"cohort-dosimetry run: nothing done: {exc}", file=sys.stderr)
            return 2
    try:  # a cohort written with another pseudonym key is refused before the flow starts
        open_cohort(args.cohort_dir).bind_pseudonym_key()
    except FileNotFoundError:
        pass  # a new cohort: its first ingest records the key's fingerprint
    except PseudonymKeyMismatch as exc:
        print(f"cohort-dosimetry run: nothing done: {exc}", file=sys.stderr)
        return 2
    from flows import cohort_flow, exit_on_termination_signals, prefect_api

    params = flow_parameters(args)
    # SIGTERM/SIGHUP/Ctrl-C unwind the run: the embedded Dask cluster and the temporary Prefect server stop with it
    try:
        with exit_on_termination_signals(), prefect_api():
            summary = cohort_flow(**params)
    except KeyboardInterrupt:
        print("cohort-dosimetry run: interrupted; the processes it started are stopped", file=sys.stderr)
        return 130
    summary["cohort_dir"] = params["cohort_dir"]
    print_summary(summary)
    return 1 if summary["n_failed"] else 0
