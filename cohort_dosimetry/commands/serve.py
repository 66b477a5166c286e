"""Register the cohort flow as a scheduled deployment on a Prefect server and serve its runs.

Needs PREFECT_API_URL pointing at a Prefect server (see deploy/). The deployment and its cron schedule appear in the
Prefect UI; this process then executes the scheduled runs until stopped (Ctrl-C).
"""

from __future__ import annotations

import argparse

from cohort_dosimetry.commands.run import add_flow_arguments, flow_parameters


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dicom_dir")
    parser.add_argument("cohort_dir")
    parser.add_argument("--cron", required=True, help='cron schedule, e.g. "0 2 * * *" for 02:00 nightly')
    parser.add_argument("--name", default="nightly", help="deployment name (default: nightly)")
    parser.add_argument("--timezone", default="UTC", help="time zone of the cron schedule (default: UTC)")
    add_flow_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from prefect.schedules import Cron
    from prefect.settings import PREFECT_API_URL
    from prefect.types.entrypoint import EntrypointType

    from flows import cohort_flow

    if not PREFECT_API_URL.value():
        print(
            "serve needs a Prefect server: set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api); see deploy/README.md"
        )
        return 2
    cohort_flow.serve(
        name=args.name,
        schedule=Cron(args.cron, timezone=args.timezone),
        parameters=flow_parameters(args),
        tags=["cohort-dosimetry"],
        # the entrypoint is the installed module (flows._flows.cohort_flow), not a file path relative to the
        # directory this command happens to run in
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    return 0
