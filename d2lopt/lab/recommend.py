"""What to change in your code: the ladder's kept settings as a script (``recommended.py``).

Taught in ``12_putting_it_together``. A ladder that ends in a table leaves the learner to
translate "+ AMP kept" into code; this module writes that translation from ``ladder.json``:
the ``DataLoader(...)`` arguments (or the d2lopt loader) that were kept, the
``TrainConfig``/``fit`` switches, the same switches as plain-PyTorch lines, and a ``main()``
that trains the ladder's own workload with them (sizes overridable from the command line).
When no rung beat the baseline, :func:`no_gain_explanation` says what the measurement means
instead. Everything is read from the result: no number is typed here.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from ..config import TrainConfig

__all__ = ["no_gain_explanation", "recommended_code", "summary_lines", "write_recommended"]

KEPT, NOT_KEPT = "measured", ("rejected", "undecided", "skipped")
LOW_STALLS = 0.10  # below this share, waiting for data is not what limits the run
_SHARES = {  # a breakdown's parts, as the subject of a sentence
    "compute": "Compute is",
    "data_wait": "Waiting for data is",
    "host_syncs": "Host syncs are",
    "evaluation": "Evaluation is",
    "fixed": "Fixed costs (start-up, first step) are",
}
_WORKLOAD_FIELDS = ("num_epochs", "batch_size", "device", "seed")  # set by main(), not switches
_DEFAULTS = TrainConfig.__dataclass_fields__


def _best(result: dict[str, Any]) -> dict[str, Any]:
    """The kept top of the climb: the last rung whose status is ``measured``."""
    return [r for r in result["rungs"] if r["status"] == KEPT][-1]


def _kept(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in result["rungs"][1:] if r["status"] == KEPT]


def _lit(value: Any) -> str:
    """A value as source text, strings double-quoted (the project's style)."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _switches(cfg: dict[str, Any], epochs: str | None = None) -> dict[str, str]:
    """The kept config's fields that differ from ``TrainConfig``'s defaults, as source text.

    ``epochs``: the expression for ``num_epochs``; ``eval_every`` that evaluates only after
    the last epoch is then written as that expression (once at the end, at any length).
    """
    out = {}
    for name, value in cfg.items():
        if name in _WORKLOAD_FIELDS or name not in _DEFAULTS or value == _DEFAULTS[name].default:
            continue
        once = name == "eval_every" and value >= cfg["num_epochs"]
        out[name] = epochs if once and epochs else _lit(value)
    return out


def _call(head: str, args: list[str], indent: int = 4) -> str:
    """``head(args...)`` laid out as ``ruff format`` would at column ``indent``."""
    one, inner = f"{head}({', '.join(args)})", ", ".join(args)
    if indent + len(one) <= 100:
        return one
    if indent + 4 + len(inner) <= 100:
        return f"{head}(\n    {inner}\n)"
    return f"{head}(\n" + "".join(f"    {a},\n" for a in args) + ")"


def _dataloader_args(cfg: dict[str, Any], batch: str) -> list[str]:
    """``DataLoader`` keywords exactly as kept (worker knobs only where there are workers)."""
    args = [f"batch_size={batch}", "shuffle=True", f"num_workers={cfg['num_workers']}"]
    if cfg["num_workers"]:
        args += [
            f"prefetch_factor={cfg['prefetch_factor'] or 2}",
            f"persistent_workers={cfg['persistent_workers']}",
        ]
    if cfg["pin_memory"]:
        args.append("pin_memory=True")
    return args


_KINDS = {
    "dataloader": "torch's DataLoader",
    "threads": "loader threads (d2lopt)",
    "decode_once": "decode once + batched augmentation (d2lopt)",
    "gpu_decode": "batched GPU decode (d2lopt)",
}
_ONE_LINE = {  # the summary's line for the d2lopt loaders (the script has them whole)
    "threads": "ThreadLoader(train_set, batch_size={b}, num_threads={t}, "
    "sampler=RandomSampler(train_set))",
    "decode_once": "cache = decode_images(train_set.samples, device); "
    "DeviceAugmentLoader(cache.images, cache.labels, batch_size={b}, size={s}, train=True)",
    "gpu_decode": "GpuDecodeLoader(read_encoded(train_set.samples), device=device, batch_size={b}, "
    "size={s}, train=True)",
}


_D2LOPT_LOADERS = {  # the body of the script's loaders() for d2lopt's own loaders
    "threads": """from d2lopt.lab.input_pipelines import ThreadLoader

def threads(ds, sampler=None):  # batches built by threads in this process
{ret}

train_iter = threads(train_set, torch.utils.data.RandomSampler(train_set))
test_iter = threads(test_set)""",
    "decode_once": """from d2lopt.lab.input_pipelines import DeviceAugmentLoader, decode_images

def decoded(ds, train):  # every file decoded once; crop + flip per batch
    cache = decode_images(ds.samples, device)
    return DeviceAugmentLoader(
        cache.images, cache.labels, batch_size=BATCH_SIZE, size=size, seed=SEED, train=train
    )

train_iter, test_iter = decoded(train_set, True), decoded(test_set, False)""",
    "gpu_decode": """from d2lopt.lab.input_pipelines import GpuDecodeLoader, read_encoded

def gpu_decoded(ds, train):  # JPEG bytes read once, decoded per batch on the GPU
    encoded = read_encoded(ds.samples)
    return GpuDecodeLoader(
        encoded, device=device, batch_size=BATCH_SIZE, size=size, seed=SEED, train=train
    )

train_iter, test_iter = gpu_decoded(train_set, True), gpu_decoded(test_set, False)""",
}


def _loader_code(spec: dict[str, Any], cfg: dict[str, Any]) -> str:
    """The body of the script's ``loaders()``: train and test loaders, as the rung built them."""
    if spec["kind"] in _D2LOPT_LOADERS:
        args = [
            "ds",
            "batch_size=BATCH_SIZE",
            f"num_threads={spec.get('threads')}",
            "sampler=sampler",
        ]
        args += ["pin_memory=True"] if cfg["pin_memory"] else []
        ret = textwrap.indent(_call("return ThreadLoader", args, indent=8), "    ")
        return _D2LOPT_LOADERS[spec["kind"]].format(ret=ret)
    if spec["kind"] != "dataloader":
        raise ValueError(f"loader: unknown kind {spec['kind']!r}")
    train = _dataloader_args(cfg, "BATCH_SIZE")
    test = [a for a in train if a != "shuffle=True"]
    return "\n".join(
        [
            _call("train_iter = torch.utils.data.DataLoader", ["train_set", *train]),
            _call("test_iter = torch.utils.data.DataLoader", ["test_set", *test]),
        ]
    )


def _plain_lines(best: dict[str, Any]) -> list[str]:
    """The kept switches as the lines a hand-written PyTorch loop needs."""
    cfg, out = best["config"], []
    if cfg["amp"] == "bf16":
        out.append("with torch.autocast(device_type, dtype=torch.bfloat16):  # forward + loss")
    if cfg["amp"] == "fp16":
        out += [
            "with torch.autocast(device_type, dtype=torch.float16):  # forward + loss",
            "scaler = torch.amp.GradScaler(device_type)  # then, per step:",
            "scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()",
        ]
    if cfg["channels_last"]:
        out.append("net = net.to(memory_format=torch.channels_last)  # once, before the optimizer")
    if cfg["compile"]:
        out.append("model = torch.compile(net)  # train model; the first step compiles")
    if cfg["non_blocking"]:
        out.append("X, y = X.to(device, non_blocking=True), y.to(device, non_blocking=True)")
    if best["loop"] == "fit":
        out += [
            "sum the loss on the device (total += loss.sum().detach()); call .item() once "
            "per epoch",
            "evaluate the test set once at the end, not train + test every epoch",
        ]
    return out or ["nothing: no step switch beat the baseline here; keep your loop"]


def _docstring(result: dict[str, Any]) -> str:
    s, kept = result["settings"], _kept(result)
    lines = [
        f"The settings kept by `d2lopt ladder` on {result['device']}; paste what you need.",
        "",
        f"Measured on: {result.get('workload', '')}; batch {s['batch_size']}, "
        f"{s['epochs']} epochs a run. Each kept rung held against the best rung below it "
        "(12_putting_it_together).",
        "",
        "Kept:",
    ]
    for r in kept:
        lines.append(f"- {r['name']}: {(r.get('decision') or {}).get('summary', r['adds'])}")
    if not kept:
        lines.append("- nothing above the baseline (the article's settings)")
    lines.append("Not kept:")
    for r in result["rungs"]:
        if r["status"] in NOT_KEPT:
            lines.append(f"- {r['name']} ({r['status']}): {r['reason']}")
    lines += [
        "",
        "Run: python recommended.py [--n-train N] [--epochs N] ("
        + (
            f"all of your data by default; the ladder's runs took at most {s['n_train']} "
            "training samples)"
            if s.get("dataset")
            else "the sizes of the ladder's runs by default)."
        ),
    ]
    wrapped = [textwrap.fill(x, 96, subsequent_indent="  ") if x else x for x in lines]
    return "\n".join(wrapped).replace("\\", "\\\\").replace('"""', "'''")


def _workload_lines(s: dict[str, Any]) -> list[str]:
    """``main``'s data and model, built as ``ladder.Workload`` builds them."""
    imports = {"d2lopt.lab.ladder": [], "d2lopt.lab.tuning": [], "d2lopt.models": []}
    if s.get("dataset"):
        imports["d2lopt.lab.ladder"].append("load_user_data")
        data = [
            f"train_set, test_set, _ = load_user_data({_lit(s['dataset'])}, SEED)",
            "train_set, test_set = subset(train_set, n_train), subset(test_set, n_test)",
        ]
    else:
        imports["d2lopt.lab.tuning"].append("standard_dataset")
        data = [
            "train_set = standard_dataset(n_train, size, train=True, root=data_dir)",
            "test_set = standard_dataset(n_test, size, train=False, root=data_dir)",
        ]
    model = ["torch.manual_seed(SEED)  # the ladder's weights"]
    if s.get("model"):
        imports["d2lopt.lab.ladder"].append("load_user_model")
        model.append(f"net = load_user_model({_lit(s['model'])})()")
    else:
        imports["d2lopt.models"].append("cnn, init_weights")
        model += ["net = cnn(in_channels=3)", "net.apply(init_weights)"]
    heads = [f"from {m} import {', '.join(names)}" for m, names in imports.items() if names]
    return [*heads, "", *data, *model]


def recommended_code(result: dict[str, Any]) -> str:
    """The content of ``recommended.py``: runnable, and readable top to bottom."""
    s, best = result["settings"], _best(result)
    cfg = best["config"]
    user = bool(s.get("dataset"))
    switches = _switches(cfg, epochs="epochs")
    config_call = _call(
        "return d2lopt.TrainConfig",
        [
            "num_epochs=epochs",
            "batch_size=BATCH_SIZE",
            "device=device",
            "seed=SEED",
            *(f"{k}={v}" for k, v in switches.items()),
        ],
    )
    ind = "    "
    return f'''"""{_docstring(result)}
"""

import argparse
import math

import torch

import d2lopt

# --n-train, --n-test, --epochs override the sizes ({
        "None: all of your data" if user else "default: the ladder's runs"
    })
N_TRAIN = {_lit(None if user else s["n_train"])}
N_TEST = {_lit(None if user else s["n_test"])}
EPOCHS = {_lit(s["epochs"])}
IMAGE_SIZE = {_lit(s["image_size"])}  # the standard JPEGs' side
BATCH_SIZE = {_lit(cfg["batch_size"])}
DEVICE = {_lit(s["device"])}
DATA_DIR = {_lit(s.get("data_dir"))}
SEED = {_lit(s["seed"])}


# (a) data loading, as kept: {_KINDS[best["loader"]["kind"]]}
def loaders(train_set, test_set, device, size):
{textwrap.indent(_loader_code(best["loader"], cfg), ind)}
    return train_iter, test_iter


# (b) the training switches, as kept (every other field keeps TrainConfig's default)
def train_config(epochs, device):
{textwrap.indent(config_call, ind)}


# (c) the same switches in a hand-written PyTorch loop:
{textwrap.indent(chr(10).join(_plain_lines(best)), "#   ")}


# (d) the ladder's workload, trained with the kept settings
def subset(ds, n):
    """At most n samples, seeded (None: all)."""
    if n is None or len(ds) <= n:
        return ds
    keep = torch.randperm(len(ds), generator=torch.Generator().manual_seed(SEED))
    return torch.utils.data.Subset(ds, keep[:n].tolist())


def workload(n_train, n_test, size, data_dir):
{textwrap.indent(chr(10).join(_workload_lines(s)), ind)}
    return train_set, test_set, net


def main(argv=None):
    p = argparse.ArgumentParser(description="Train with the settings d2lopt ladder kept.")
    p.add_argument("--n-train", type=int, default=N_TRAIN)
    p.add_argument("--n-test", type=int, default=N_TEST)
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    p.add_argument("--device", default=DEVICE)
    p.add_argument("--data-dir", default=DATA_DIR)
    args = p.parse_args(argv)
    train_set, test_set, net = workload(args.n_train, args.n_test, args.image_size, args.data_dir)
    config = train_config(args.epochs, args.device)
    print(config)
    train_iter, test_iter = loaders(train_set, test_set, config.torch_device, args.image_size)
    records = d2lopt.fit(net, train_iter, test_iter, config)
    loss = records[-1]["test_loss"]
    print(f"final test loss: {{loss:.4f}}")
    return 0 if math.isfinite(loss) else 1


if __name__ == "__main__":
    raise SystemExit(main())
'''


def write_recommended(result: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``out_dir/recommended.py`` (``run_ladder`` calls it next to ``ladder.json``)."""
    path = Path(out_dir) / "recommended.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(recommended_code(result))
    return path


def _shares(row: dict[str, Any]) -> tuple[dict[str, float], str]:
    """Fractions of the baseline's time, and what they are fractions of.

    ``breakdown`` (fractions of a run) when the report has it; an older report has only the
    data stalls of the training loop, the step being the rest of the loop.
    """
    if row.get("breakdown"):
        return {k: row["breakdown"][k] for k in _SHARES if k in row["breakdown"]}, "run"
    stall = row.get("stall_fraction")
    return ({"data_wait": stall, "compute": 1 - stall} if stall is not None else {}), "loop"


def no_gain_explanation(result: dict[str, Any]) -> str | None:
    """What "nothing beat the baseline" means here, from the measurement; None if a rung was kept.

    A learner whose every rung was rejected needs the next question answered: is the loader
    the bottleneck (data stalls), the step (compute), evaluation or fixed costs? And an
    undecided rung is not a rejected one: the rounds could not separate it.
    """
    if _kept(result):
        return None
    shares, of = _shares(result["rungs"][0])
    text = []
    if shares:
        data, top = shares.get("data_wait", 0.0), max(shares, key=shares.get)
        if top == "compute" and data < LOW_STALLS:
            text.append(
                f"Data stalls are {_pct(data)} of the baseline's {of}, so the loader is "
                f"not your bottleneck; the step is (compute {_pct(shares['compute'])} "
                f"of a {of})."
            )
        elif top == "data_wait":
            text.append(
                f"Waiting for data is the largest share of the baseline's {of} "
                f"({_pct(data)}), yet no loader rung beat it on this machine."
            )
        else:
            text.append(
                f"{_SHARES[top]} {_pct(shares[top])} of the baseline's {of}, the largest "
                f"share; data stalls {_pct(data)}."
            )
            hygiene = [r for r in result["rungs"] if r["name"] == "+ loop hygiene"]
            if top == "evaluation" and hygiene:
                text.append(f"Loop hygiene (evaluate once, at the end) was {hygiene[0]['status']}.")
    undecided = [r["name"] for r in result["rungs"] if r["status"] == "undecided"]
    rejected = [r["name"] for r in result["rungs"] if r["status"] == "rejected"]
    if undecided:
        text.append(
            f"{', '.join(undecided)}: undecided, the rounds could not separate them from "
            "the baseline in their budget; raise --budget to decide them."
        )
    elif rejected:
        bar = 1 + result["settings"]["min_effect"]
        text.append(f"Every rung tried was rejected: none had its interval above {bar:.2f}x.")
    return " ".join(text) or "No rung beat the baseline in this run."


def _config_line(cfg: dict[str, Any]) -> str:
    args = [f"batch_size={cfg['batch_size']}", *(f"{k}={v}" for k, v in _switches(cfg).items())]
    return f"d2lopt.TrainConfig({', '.join(args)})"


def summary_lines(result: dict[str, Any], path: str | Path | None = None) -> list[str]:
    """The lines ``d2lopt ladder`` prints at its end: what was kept, as code, and where."""
    kept, best = _kept(result), _best(result)
    where = f"written to {path}" if path else "recommended.py in --out"
    not_kept = [f"{r['name']} ({r['status']})" for r in result["rungs"] if r["status"] in NOT_KEPT]
    lines = []
    if kept:
        top = result.get("best") or {}
        gain = ""
        if top.get("speedup") is not None and top.get("speedup_ci"):
            lo, hi = top["speedup_ci"]  # None: too few rounds for an interval
            ci = "no interval" if lo is None or hi is None else f"[{lo:.2f}, {hi:.2f}]"
            gain = f" ({top['speedup']:.2f}x {ci} the baseline's speed)"
        lines.append(f"Kept: {', '.join(r['name'] for r in kept)}{gain}")
    else:
        lines += ["Kept: nothing above the baseline.", no_gain_explanation(result) or ""]
    if not_kept:
        lines.append(f"Not kept: {', '.join(not_kept)}")
    cfg, spec = best["config"], best["loader"]
    if spec["kind"] == "dataloader":
        args = ", ".join(_dataloader_args(cfg, str(cfg["batch_size"])))
        loader = f"torch.utils.data.DataLoader(train_set, {args})"
    else:
        size = result["settings"]["image_size"]
        loader = _ONE_LINE[spec["kind"]].format(b=cfg["batch_size"], t=spec.get("threads"), s=size)
    lines += [
        f"  {loader}",
        f"  {_config_line(cfg)}",
        f"The script with these settings (python recommended.py --n-train 64 --epochs 1 "
        f"to try it small): {where}",
    ]
    return lines
