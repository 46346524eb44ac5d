"""``d2lopt tune-loader``: sweep the DataLoader's settings (:mod:`d2lopt.lab.tuning` measures)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..flags import add_config_flag, non_negative_int, positive_float, positive_int

# parameter of the code tune-loader calls -> the flag that sets it
FLAGS = {"device": "--device", "dataset": "--dataset", "size": "--image-size", "n": "--n"}


def _int_list(minimum: int) -> Callable[[str], list[int]]:
    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated integers such as 0,1,2, got {text!r}"
            ) from None
        if not values or min(values) < minimum:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated integers >= {minimum}, got {text!r}"
            )
        return values

    return parse


def add_dataset_flag(p: argparse.ArgumentParser) -> None:
    """``--dataset MODULE:ATTR`` (``tune-loader``; ``ladder`` can share it)."""
    p.add_argument(
        "--dataset",
        metavar="MODULE:ATTR",
        default=None,
        help="import path of a Dataset or of a zero-argument function returning one, e.g. "
        "mydata:train_set (the current folder is importable); default: the standard image "
        "folder",
    )


def add_command(sub: argparse._SubParsersAction) -> None:
    """Register ``d2lopt tune-loader``."""
    p = sub.add_parser(
        "tune-loader",
        help="sweep num_workers/prefetch_factor/persistent_workers/pin_memory for a data set",
        description="Measure every DataLoader setting on this machine for your Dataset "
        "(--dataset module:attr) or the course's standard image folder, in paired rounds "
        "within a time budget; print each setting's interval against PyTorch's defaults "
        "and the best setting, save a heatmap.",
    )
    add_dataset_flag(p)
    # the positional form of earlier versions: still accepted, with a note (see _run)
    p.add_argument("old_dataset", nargs="?", default=None, help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=positive_int, default=64, help="default: %(default)s")
    p.add_argument(
        "--workers",
        type=_int_list(0),
        default=None,
        help="num_workers values, e.g. 0,1,2 (default: 0,1,2,4.. up to the cores)",
    )
    p.add_argument(
        "--prefetch",
        type=_int_list(1),
        default=[2, 4],
        help="prefetch_factor values (default: 2,4)",
    )
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=2,
        help="epochs per pass; >= 2 shows persistent_workers (default: 2)",
    )
    p.add_argument(
        "--max-batches",
        type=positive_int,
        default=None,
        help="batches per epoch (default: as many as fit 8 rounds in --max-seconds)",
    )
    p.add_argument(
        "--max-seconds",
        type=positive_float,
        default=60.0,
        help="time budget of the sweep, warm-up included; it stops earlier once every "
        "interval is decided and narrow (default: %(default)g)",
    )
    p.add_argument(
        "--rounds",
        type=positive_int,
        default=None,
        help="at most this many paired rounds (default: until decided, or the budget)",
    )
    add_config_flag(p, "device", help="where batches are copied: auto, cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--n",
        type=positive_int,
        default=1024,
        help="images in the standard data set (default: %(default)s)",
    )
    p.add_argument(
        "--image-size",
        type=positive_int,
        default=64,
        help="side of the standard images (default: %(default)s)",
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="shuffling seed")
    p.add_argument(
        "--out",
        default="runs/tune-loader",
        help="folder for tune-loader.json and heatmap.png (default: %(default)s)",
    )
    p.set_defaults(run=run, flags=FLAGS)


def run(args: argparse.Namespace) -> int:
    from ..lab.tuning import _run

    return _run(args)
