"""``d2lopt ladder``: climb the optimization ladder on this machine (:mod:`d2lopt.lab.ladder`)."""

from __future__ import annotations

import argparse

from ..errors import UsageError, writable_dir
from ..flags import add_config_flag, dashed, non_negative_int, positive_float, positive_int

# the LadderSettings sizes and budgets with a flag each (passed on to LadderSettings.preset)
_SIZES = ("n_train", "n_test", "image_size", "batch_size", "epochs", "max_rounds",
          "budget_seconds")  # fmt: skip
# every LadderSettings parameter a flag sets: a ParamError about one names the flag
FLAGS: dict[str, str] = {
    **dashed(*_SIZES, "device", "seed", "dataset", "model", "data_dir"),
    "max_rounds": "--rounds",
    "budget_seconds": "--budget",
    "out_dir": "--out",
}


def add_command(sub: argparse._SubParsersAction) -> None:
    """Register ``d2lopt ladder``."""
    p = sub.add_parser(
        "ladder",
        help="measure every optimization on this machine, rung by rung, against peers",
        description="Climb the optimization ladder on the standard workload (JPEGs on disk, "
        "decode + augmentation, the course CNN) or on yours (--dataset, --model): each rung "
        "is kept only when it is faster than the best so far with an interval above 1 + 5%. "
        "Then the kept rungs, the compute ceiling and d2l and Lightning (as their own docs "
        "run them, and fed like the best rung) run whole in the same paired rounds. Every "
        "comparison sizes its work from what a round costs here, to fit --budget.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a short run: at most 256 training images, a 100 s budget (default: at most "
        "2048 images, 510 s: under ten minutes on 2 CPU cores)",
    )
    p.add_argument(
        "--out",
        default="runs/ladder",
        help="folder for ladder.json, ladder.md, ladder.png (default: %(default)s)",
    )
    add_config_flag(p, "device")  # TrainConfig.device's flag: the same accepted values
    p.add_argument("--compile", action="store_true", help="also try the torch.compile rung")
    w = p.add_argument_group("your workload (default: the standard JPEG folder and CNN)")
    w.add_argument(
        "--dataset",
        metavar="MODULE:ATTR",
        default=None,
        help="a map-style Dataset, or a zero-argument function returning one or a (train, "
        "test) pair; a single set gets a seeded 10%% held out (the current folder is importable)",
    )
    w.add_argument(
        "--model",
        metavar="MODULE:ATTR",
        default=None,
        help="a zero-argument function or class building an nn.Module that classifies the "
        "data's batches (cross-entropy)",
    )
    g = p.add_argument_group("sizes (default: scaled to --quick and the device)")
    sizes = {
        "--n-train": "at most this many training images (with --dataset: a seeded subset; "
        "each comparison uses as many as its rounds can afford, and says how many)",
        "--n-test": "at most this many test images",
        "--image-size": "side of the standard JPEGs",
        "--batch-size": "samples per batch",
        "--epochs": "epochs per run",
    }
    for flag, text in sizes.items():
        g.add_argument(flag, type=positive_int, default=None, help=text)
    b = p.add_argument_group("measurement (default: scaled to --quick and the device)")
    b.add_argument(
        "--budget",
        dest="budget_seconds",
        metavar="SECONDS",
        type=positive_float,
        default=None,
        help="the whole run's time, set-up included, shared over the decisions and the "
        "final rounds (default: 100 with --quick, else 510)",
    )
    b.add_argument("--rounds", type=positive_int, default=None, help="at most this many rounds")
    g.add_argument("--seed", type=non_negative_int, default=0)
    g.add_argument(
        "--data-dir",
        default=None,
        help="where the JPEG folders are written (default: the d2lopt data cache)",
    )
    p.set_defaults(run=run, flags=FLAGS)


def run(args: argparse.Namespace) -> int:
    from ..lab.ladder import LadderSettings, Workload, run_ladder
    from ..lab.ladder_report import describe_target, format_table
    from ..lab.logbar import LogBar
    from ..lab.recommend import summary_lines

    if args.rounds == 1:
        raise UsageError("--rounds: must be >= 2: a ratio needs paired rounds")
    settings = LadderSettings.preset(  # a bad value: ParamError, named as its flag by main
        args.quick,
        args.device,
        compile=args.compile,
        seed=args.seed,
        data_dir=args.data_dir,
        dataset=args.dataset,
        model=args.model,
        max_rounds=args.rounds,
        **{k: getattr(args, k) for k in _SIZES if k != "max_rounds"},
    )
    if args.dataset is not None or args.model is not None:
        Workload(settings)  # bad imports, types and batches: named before anything is written
    out = writable_dir(args.out)
    with LogBar("ladder", echo=True) as bar:  # the log above a bar with the time left
        result = run_ladder(settings, out_dir=out, log=bar, progress=bar.at)
    print(format_table(result))
    for t in result["targets"]:
        print(f"target: {t['target']}: {t['text']} ({describe_target(t)})")
    print()
    for line in summary_lines(result):
        print(line)
    print(f"saved {out / 'ladder.json'}, ladder.md, ladder.png, recommended.py "
          f"({result['elapsed_s']:.0f} s)")  # fmt: skip
    return 0
