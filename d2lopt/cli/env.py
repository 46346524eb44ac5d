"""``d2lopt env``: the hardware/software report and recommended starting settings."""

from __future__ import annotations

import argparse
import json


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "env",
        help="hardware/software report and recommended starting settings",
        description="Print versions, devices, cores, bf16/TF32 support, and starting settings.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(run=run, flags={})


def run(args: argparse.Namespace) -> int:
    from ..envinfo import environment_report, format_report, recommend_settings

    report = environment_report()
    recommended = recommend_settings(report)
    if args.json:
        print(json.dumps({"report": report, "recommended": recommended}, indent=2))
    else:
        print(format_report(report, recommended))
    return 0
