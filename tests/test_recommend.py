"""recommended.py and the ladder's closing lines, from ladder.json dicts (d2lopt.lab.recommend).

Each case starts from the committed CPU report and changes statuses, as the ladder would have
written them; one test runs a generated script end to end, small.
"""

from __future__ import annotations

import json
import math
import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from d2lopt.lab.recommend import (
    no_gain_explanation,
    recommended_code,
    summary_lines,
    write_recommended,
)

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "benchmarks/results/cpu-amd-epyc-2core/ladder-quick/ladder.json"  # batch 32
RUFF = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")


def committed() -> dict:
    return json.loads(REPORT.read_text())


def rung(result: dict, name: str) -> dict:
    return next(r for r in result["rungs"] if r["name"] == name)


def set_status(result: dict, name: str, status: str, reason: str) -> None:
    r = rung(result, name)
    r["status"], r["reason"] = status, reason


def kept_workers() -> dict:
    """Worker processes kept (2 workers, prefetch 4, persistent); everything above rejected."""
    result = committed()
    workers = rung(result, "+ loader workers")
    workers["status"], workers["reason"] = "measured", ""
    workers["config"].update(num_workers=2, prefetch_factor=4, persistent_workers=True)
    for name in ("+ decode once", "+ AMP", "+ loop hygiene", "+ channels_last"):
        set_status(result, name, "rejected", "0.98x [0.90, 1.04], 6 rounds: does not hold")
    return result


BREAKDOWN = {"compute": 0.81, "data_wait": 0.02, "host_syncs": 0.05, "evaluation": 0.07,
             "fixed": 0.03, "other": 0.02}  # fmt: skip


def nothing_kept(breakdown: dict | None = BREAKDOWN, undecided: tuple[str, ...] = ()) -> dict:
    result = committed()
    for r in result["rungs"][1:]:
        if r["status"] == "measured":
            r["status"], r["reason"] = "rejected", "1.01x [0.97, 1.04], 6 rounds: does not hold"
    for name in undecided:
        set_status(result, name, "undecided", "1.08x [0.96, 1.22], 3 rounds: not separated")
    if breakdown is not None:
        result["rungs"][0]["breakdown"] = dict(breakdown)
    else:  # a report from before the breakdown was measured
        result["rungs"][0].pop("breakdown", None)
    result["best"] = {"name": "baseline", "speedup": 1.0, "speedup_ci": [1.0, 1.0]}
    return result


def user_workload() -> dict:
    result = committed()
    result["settings"].update(dataset="mydata:make", model="mymodel:Net")
    for name in ("+ decode once", "+ AMP", "+ loop hygiene", "+ channels_last"):
        set_status(result, name, "rejected", "0.98x [0.90, 1.04], 6 rounds: does not hold")
    return result


def other_loader(kind: dict, **config) -> dict:
    result = committed()
    for name in ("+ decode once", "+ AMP", "+ loop hygiene", "+ channels_last"):
        rung(result, name)["loader"] = dict(kind)
        rung(result, name)["config"].update(config)
    return result


CASES = {
    "decode_once_amp_hygiene_channels_last": committed,
    "loader_workers": kept_workers,
    "nothing_kept": nothing_kept,
    "nothing_kept_old_report": lambda: nothing_kept(breakdown=None),
    "undecided": lambda: nothing_kept(undecided=("+ AMP", "+ channels_last")),
    "user_workload": user_workload,
    "threads": lambda: other_loader({"kind": "threads", "threads": 2}),
    "threads_pinned": lambda: other_loader({"kind": "threads", "threads": 4}, pin_memory=True),
    "gpu_decode": lambda: other_loader({"kind": "gpu_decode"}),
}


def squeeze(code: str) -> str:
    """The code without whitespace or trailing commas: call arguments however laid out."""
    return re.sub(r"\s", "", code).replace(",)", ")")


@pytest.mark.parametrize("case", sorted(CASES))
def test_script_compiles_and_passes_ruff(case, tmp_path):
    result = CASES[case]()
    path = write_recommended(result, tmp_path)
    assert path == tmp_path / "recommended.py"
    code = path.read_text()
    compile(code, str(path), "exec")
    assert "12_putting_it_together" in code and result["device"] in code
    if not Path(RUFF).exists():
        pytest.skip("ruff is not installed")
    for args in (["check", "--select", "E,F,W,B,UP"], ["format", "--check"]):
        run = subprocess.run(
            [RUFF, *args, "--isolated", "--no-cache", "--line-length", "100", str(path)],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stdout + run.stderr


def test_decode_once_amp_hygiene_channels_last():
    result = committed()
    code = recommended_code(result)
    kept = ["+ decode once", "+ AMP", "+ loop hygiene", "+ channels_last"]
    for name in kept:
        assert f"- {name}: {rung(result, name)['decision']['summary']}" in code
    workers = rung(result, "+ loader workers")
    assert f"- + loader workers (rejected): {workers['decision']['summary']}" in code
    assert "- + GPU decode (skipped): needs CUDA (nvJPEG)" in code
    assert "decode_images(ds.samples, device)" in code and "DeviceAugmentLoader(" in code
    assert 'amp="bf16",' in code and "channels_last=True" in code
    assert "eval_every=epochs" in code  # kept: evaluate once, after the last epoch
    assert "num_workers" not in squeeze(code.split("def train_config")[1].split("# (c)")[0])
    plain = code.split("# (c)")[1].split("# (d)")[0]
    assert "torch.autocast(device_type, dtype=torch.bfloat16)" in plain
    assert "net.to(memory_format=torch.channels_last)" in plain
    assert "once per epoch" in plain and "once at the end" in plain
    assert "non_blocking" not in plain  # not kept: not said
    lines = summary_lines(result, "runs/ladder/recommended.py")
    speedup = f"{result['best']['speedup']:.2f}x"
    assert lines[0].startswith(
        f"Kept: + decode once, + AMP, + loop hygiene, + channels_last ({speedup}"
    )
    assert (
        '  d2lopt.TrainConfig(batch_size=32, amp="bf16", eval_every=2, channels_last=True)' in lines
    )
    assert lines[-1].endswith("written to runs/ladder/recommended.py")
    assert no_gain_explanation(result) is None


def test_kept_loader_workers_dataloader_args_exact(tmp_path):
    result = kept_workers()
    code = recommended_code(result)
    args = (
        "batch_size=BATCH_SIZE,shuffle=True,num_workers=2,prefetch_factor=4,persistent_workers=True"
    )
    assert f"DataLoader(train_set,{args})" in squeeze(code)
    assert "DataLoader(test_set," + args.replace("shuffle=True,", "") + ")" in squeeze(code)
    assert "amp=" not in code and "channels_last=True" not in code
    assert "- + AMP (rejected)" in code
    line = (
        "  torch.utils.data.DataLoader(train_set, batch_size=32, shuffle=True, num_workers=2, "
        "prefetch_factor=4, persistent_workers=True)"
    )
    assert line in summary_lines(result)
    assert "  d2lopt.TrainConfig(batch_size=32, num_workers=2, prefetch_factor=4, " \
        "persistent_workers=True)" in summary_lines(result)  # fmt: skip
    # the script's own loader is built with those arguments
    ns = runpy.run_path(str(write_recommended(result, tmp_path)))
    data = torch.utils.data.TensorDataset(torch.zeros(8, 3, 8, 8), torch.zeros(8, dtype=torch.long))
    train, test = ns["loaders"](data, data, torch.device("cpu"), 8)
    assert (train.num_workers, train.prefetch_factor, train.persistent_workers) == (2, 4, True)
    assert isinstance(train.sampler, torch.utils.data.RandomSampler)
    assert isinstance(test.sampler, torch.utils.data.SequentialSampler)
    config = ns["train_config"](3, "cpu")
    assert (config.num_workers, config.amp, config.batch_size, config.num_epochs) == (
        2,
        "off",
        32,
        3,
    )


def _numbers(text: str) -> list[str]:
    return re.findall(r"\d+(?:\.\d+)?", text)


def test_nothing_kept_explains_from_the_breakdown():
    result = nothing_kept()
    text = no_gain_explanation(result)
    assert text is not None
    assert "the loader is not your bottleneck; the step is (compute 81% of a run)" in text
    assert "Data stalls are 2% of the baseline's run" in text
    assert "rejected" in text
    b = result["rungs"][0]["breakdown"]
    allowed = {f"{100 * v:.0f}" for v in b.values()} | {
        f"{1 + result['settings']['min_effect']:.2f}"
    }
    assert _numbers(text) and set(_numbers(text)) <= allowed
    lines = summary_lines(result)
    assert lines[:2] == ["Kept: nothing above the baseline.", text]
    assert (
        "  torch.utils.data.DataLoader(train_set, batch_size=32, shuffle=True, num_workers=0)"
        in lines
    )
    assert "  d2lopt.TrainConfig(batch_size=32)" in lines
    assert "- nothing above the baseline" in recommended_code(result)


def test_nothing_kept_other_bottlenecks():
    evaluation = dict(BREAKDOWN, compute=0.30, evaluation=0.55)
    text = no_gain_explanation(nothing_kept(evaluation))
    assert text.startswith(
        "Evaluation is 55% of the baseline's run, the largest share; data stalls 2%."
    )
    assert "Loop hygiene (evaluate once, at the end) was rejected." in text
    data = dict(BREAKDOWN, compute=0.30, data_wait=0.60)
    assert (
        "Waiting for data is the largest share of the baseline's run (60%)"
        in no_gain_explanation(nothing_kept(data))
    )
    old = nothing_kept(breakdown=None)  # a report from before the breakdown: the loop's stalls
    stall = old["rungs"][0]["stall_fraction"]
    text = no_gain_explanation(old)
    assert f"data stalls {100 * stall:.0f}%" in text
    assert f"Compute is {100 * (1 - stall):.0f}% of the baseline's loop" in text


def test_undecided_rungs_are_listed_as_undecided_not_rejected():
    result = nothing_kept(undecided=("+ AMP", "+ channels_last"))
    code = recommended_code(result)
    assert "- + AMP (undecided): 1.08x [0.96, 1.22], 3 rounds" in code
    assert "- + channels_last (undecided)" in code
    assert "+ AMP (rejected)" not in code and "+ channels_last (rejected)" not in code
    assert "- + loop hygiene (rejected)" in code
    text = no_gain_explanation(result)
    assert "+ AMP, + channels_last: undecided" in text and "--budget" in text
    assert "Every rung tried was rejected" not in text
    not_kept = next(x for x in summary_lines(result) if x.startswith("Not kept:"))
    assert "+ AMP (undecided)" in not_kept and "+ loader workers (rejected)" in not_kept


def test_user_workload_trains_on_all_of_the_learners_data():
    code = recommended_code(user_workload())
    assert "from d2lopt.lab.ladder import load_user_data, load_user_model" in code
    assert 'load_user_data("mydata:make", SEED)' in code
    assert 'net = load_user_model("mymodel:Net")()' in code
    assert "N_TRAIN = None" in code and "standard_dataset" not in code
    said = "all of your data by default; the ladder's runs took at most 256 training samples"
    assert said in " ".join(code.split())


def run_script(path: Path, *args: str) -> str:
    """Run a generated script in its folder; it exits 0 and prints a finite final loss."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TQDM_DISABLE="1")
    run = subprocess.run(
        [sys.executable, str(path), *args],
        cwd=path.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert math.isfinite(float(re.search(r"final test loss: (\S+)", run.stdout).group(1)))
    return run.stdout


@pytest.mark.slow
def test_recommended_script_trains_with_the_kept_settings(tmp_path):
    """decode once + bf16 + hygiene + channels_last, run small: a finite loss, its config."""
    result = committed()
    result["settings"]["data_dir"] = str(tmp_path / "data")
    path = write_recommended(result, tmp_path)
    out = run_script(
        path, "--n-train", "64", "--n-test", "32", "--epochs", "2", "--image-size", "16"
    )
    for kept in ("amp='bf16'", "channels_last=True", "eval_every=2", "num_epochs=2"):
        assert kept in out
    assert (tmp_path / "data").is_dir()  # the JPEGs went to the given folder


@pytest.mark.slow
def test_recommended_script_trains_the_learners_own_data_and_model(tmp_path):
    """--dataset/--model MODULE:ATTR: the script imports them from its folder, as the CLI does."""
    (tmp_path / "mydata.py").write_text(
        "import torch\n\n\ndef make():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    x, y = torch.randn(200, 8, generator=g), torch.randint(0, 3, (200,), generator=g)\n"
        "    return torch.utils.data.TensorDataset(x, y)\n"
    )
    (tmp_path / "mymodel.py").write_text(
        "import torch\n\n\ndef Net():\n    return torch.nn.Sequential(torch.nn.Linear(8, 3))\n"
    )
    path = write_recommended(user_workload(), tmp_path)
    assert "amp='off'" in run_script(path, "--epochs", "1")
