"""``d2lopt tune-loader``: sweep the DataLoader's settings (:mod:`d2lopt.lab.tuning` measures)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import UsageError, writable_dir
from ..flags import (
    add_config_flag,
    non_negative_int,
    positive_float,
    positive_int,
)

if TYPE_CHECKING:
    import torch

    from ..lab.bench import LoaderSweep

# parameter of the code tune-loader calls -> the flag that sets it
FLAGS = {
    "out_dir": "--out",
    "device": "--device",
    "dataset": "--dataset",
    "size": "--image-size",
    "n": "--n",
}


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
        "and the best setting, then what each setting costs in memory, save a heatmap.",
    )
    add_dataset_flag(p)
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


def _print_results(sweep: LoaderSweep, cores: int, device: torch.device) -> dict[str, Any]:
    rows = [f"{'setting':<58} {'samples/s':>9} {'start-up':>9} {'waiting':>8}  vs default"]
    for label, run in sweep.runs.items():
        c = run.vs_reference
        vs = "reference" if c is None else f"{c}: {c.verdict}"
        rows.append(f"{label:<58} {run.samples_per_s:>9.0f} {run.startup * 1e3:>6.0f} ms "
                    f"{run.wait_fraction:>8.0%}  {vs}")  # fmt: skip
    print("\n".join(rows))
    print(
        "start-up: time to the first batch (workers starting, first reads); waiting: the "
        "share of a pass spent waiting for the next batch, i.e. what the loader would make "
        "a training step wait (near 100%: loading is the bottleneck, as in a pass that only "
        "loads; near 0%: batches are ready before they are asked for)"
    )
    best = sweep.best() if sweep.sweep is not None else next(iter(sweep.runs.values()))
    c = best.vs_reference
    if c is None:
        others = len(sweep.runs) - 1
        print(f"best: {best.label} (PyTorch's default): "
              + (f"none of the {others} other settings is faster with an interval above "
                 f"{1 + _min_effect(sweep):.2f}"
                 if others else "the only setting measured"))  # fmt: skip
    else:
        print(f"best: {best.label}: {c} against {sweep.reference} ({c.verdict})")
    note = None
    if device.type == "cpu":
        note = (
            f"note: these passes measured the loader alone; in training, the training step "
            f"competes with the loader for the same {cores} core(s), so workers gain less "
            "there, or lose. `d2lopt ladder --dataset ... --model ...` measures them with your "
            "training step."
        )
        print(note)
    return {"best": best, "note": note}


def _print_memory(memory: dict[str, Any]) -> None:
    """The memory table: what each setting's workers hold, and the batches in flight."""
    from ..memory import MiB

    title = "memory each setting costs (MiB, one untimed pass)"
    print(f"{title:<60} {'USS':>8} {'PSS':>8} {'growth':>7} {'prefetch':>8} {'pinned':>7}")
    for label, m in memory.items():  # indented: the speed rows start with the label
        print(f"  {label:<58} {m.uss / MiB:>8.1f} {m.pss / MiB:>8.1f} {m.growth / MiB:>+7.1f} "
              f"{m.prefetched / MiB:>8.1f} {m.pinned / MiB:>7.1f}")  # fmt: skip
    print(
        "  (USS/PSS: the workers' own / proportional memory, summed; growth: USS gained "
        "during the pass, copy-on-read if it keeps growing; prefetch: num_workers x "
        "prefetch_factor batches held ready; pinned: page-locked bytes at most)"
    )


def _min_effect(sweep: LoaderSweep) -> float:
    return next((r.vs_reference.min_effect for r in sweep.runs.values() if r.vs_reference), 0.05)


def run(args: argparse.Namespace) -> int:
    """``d2lopt tune-loader``: measure the grid, print the table, save the JSON and heatmap.

    A bad value raises :class:`~d2lopt.errors.UsageError`, or a ParamError whose parameter
    the command maps to its flag (``device``, ``dataset``, ``size``: ``--image-size``).
    """
    from ..devices import resolve_device
    from ..lab.tuning import (
        dataset_from_flag,
        default_workers,
        fit_batches,
        loader_memory,
        plot_heatmap,
        standard_dataset,
        sweep_grid,
        tune_loader,
    )

    device = resolve_device(args.device)
    if args.rounds is not None and args.rounds < 2:
        raise UsageError("--rounds: must be >= 2: an interval needs paired rounds")
    cores = default_workers()[-1]
    workers = args.workers if args.workers is not None else default_workers()
    if max(workers) > 4 * cores:
        raise UsageError(
            f"--workers: {max(workers)} workers on {cores} cores would thrash; use at most {cores}"
        )
    out = writable_dir(args.out, create=False)  # created once the data set is known to load
    if args.dataset is not None:
        dataset = dataset_from_flag(args.dataset)
        name = args.dataset
    else:
        dataset = standard_dataset(args.n, args.image_size)
        name = f"standard image folder ({args.n} JPEGs, {args.image_size}px, decode + augment)"
    pins = (False, True) if device.type == "cuda" else (False,)
    if device.type != "cuda":
        print(
            f"tune-loader: pin_memory needs a CUDA GPU; not swept on {device.type}", file=sys.stderr
        )
    grid = sweep_grid(workers, args.prefetch, (False, True), pins)
    try:
        batches = args.max_batches or fit_batches(
            dataset, len(grid), batch_size=args.batch_size, epochs=args.epochs,
            max_seconds=args.max_seconds,
        )  # fmt: skip
        print(
            f"tune-loader: {len(grid)} settings on {name}; each pass {args.epochs} epoch(s) of "
            f"{batches} batches of {args.batch_size}; budget {args.max_seconds:g} s",
            file=sys.stderr,
        )
        sweep = tune_loader(
            dataset, grid, batch_size=args.batch_size, epochs=args.epochs, max_batches=batches,
            device=device, max_seconds=args.max_seconds, max_rounds=args.rounds or 200,
            seed=args.seed,
        )  # fmt: skip
        memory = loader_memory(dataset, grid, batch_size=args.batch_size, max_batches=batches,
                               seed=args.seed)  # fmt: skip
    except (TypeError, ValueError, RuntimeError) as exc:  # e.g. samples default_collate rejects
        raise UsageError(
            f"--dataset: loading batches failed ({type(exc).__name__}: {exc})"
        ) from None
    out = writable_dir(out)
    _print_memory(memory)
    shown = _print_results(sweep, cores, device)
    best = shown["best"]
    c = best.vs_reference
    report = {
        "dataset": name,
        "device": str(device),
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "max_batches": batches,
        "max_seconds": args.max_seconds,
        "rounds": sweep.sweep.rounds if sweep.sweep is not None else len(best.seconds),
        "reference": sweep.reference,
        "results": [run.to_dict() for run in sweep.runs.values()],
        "best": best.to_dict(),
        "speedup_vs_default": 1.0 if c is None else c.speedup,
        "speedup_ci": None if c is None else [None if math.isnan(x) else x for x in c.ci],
        "note": shown["note"],
        "memory": {label: m.to_dict() for label, m in memory.items()},
    }
    (out / "tune-loader.json").write_text(json.dumps(report, indent=2))
    ax = plot_heatmap(sweep)
    ax.figure.savefig(out / "heatmap.png", dpi=120)
    print(f"saved {out / 'tune-loader.json'} and {out / 'heatmap.png'}")
    return 0
