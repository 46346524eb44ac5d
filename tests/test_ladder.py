"""Correctness of d2lopt.lab.ladder and `d2lopt ladder` (speed targets live in the notebook).

Two toy-sized ladders (the standard JPEG workload, and a learner's own tensors and MLP) feed
most tests: they check the report's structure, the decision rule and the arithmetic that
links its numbers, never how fast anything was.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import runpy
from pathlib import Path

import pytest
import torch

import d2lopt.lab.ladder
import d2lopt.lab.ladder_report
from d2lopt.cli import main
from d2lopt.lab.ladder import (
    RUNG_NAMES,
    LadderSettings,
    PeakMemory,
    RunStats,
    Timed,
    load_user_data,
    load_user_model,
    run_ladder,
)
from d2lopt.lab.ladder_report import (
    LOOPS,
    PEERS,
    check_targets,
    describe_target,
    format_table,
    markdown_table,
    readme_section,
)
from d2lopt.lab.tuning import default_workers
from d2lopt.measure import Comparison

ROOT = Path(__file__).resolve().parents[1]
TOY = dict(
    n_train=32, n_test=16, image_size=16, batch_size=16, epochs=2, budget_seconds=4.0,
    max_rounds=2, device="cpu",
)  # fmt: skip  # small for testing efficiency: two rounds per comparison


def _run(settings: LadderSettings, out: Path) -> tuple[dict, list[str]]:
    log: list[str] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # toy tensors: one thread is faster, and immune to a busy machine
    try:
        report = run_ladder(settings, out_dir=out, log=log.append)
    finally:
        torch.set_num_threads(threads)
    return report, log


@pytest.fixture(scope="module")
def ladder_run(tmp_path_factory):
    """One toy ladder on the standard workload: (report, log, out)."""
    tmp = tmp_path_factory.mktemp("ladder")
    report, log = _run(LadderSettings(**TOY, data_dir=str(tmp / "data")), tmp / "out")
    return report, log, tmp / "out"


@pytest.fixture
def user_module(learner_module):
    """A learner's data and models in the current folder, as `--dataset mine:...` sees them."""
    return learner_module(
        "mine",
        """
        import torch
        from torch import nn
        from torch.utils.data import IterableDataset, TensorDataset

        g = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.randn(40, 6, generator=g), torch.arange(40) % 3)
        floats = TensorDataset(torch.randn(8, 6), torch.randn(8))

        def pair():
            return TensorDataset(torch.randn(30, 6), torch.arange(30) % 3), data

        def mlp():
            return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))

        def wrong_width():
            return nn.Linear(5, 3)

        def not_a_model():
            return 42

        instance = mlp()

        class Stream(IterableDataset):
            def __iter__(self):
                return iter(range(3))

        stream = Stream()
        number = 7
    """,
    )


# ------------------------------------------------------------------------------ the report
def test_every_rung_is_reported_in_order_with_a_status(ladder_run) -> None:
    report, _, _ = ladder_run
    assert [r["name"] for r in report["rungs"]] == list(RUNG_NAMES)
    assert all(r["status"] in {"measured", "skipped", "rejected", "undecided"}
               for r in report["rungs"])  # fmt: skip
    base = report["rungs"][0]
    assert base["status"] == "measured" and base["speedup"] == 1.0 and base["loop"] == "article"
    assert base["config"]["num_workers"] == 0 and base["config"]["amp"] == "off"
    assert base["decision"] is None
    hw = report["hardware"]
    assert hw["cpu_cores"] >= 1 and report["versions"]["torch"] == torch.__version__
    assert report["device"].startswith("cpu") and report["final_rounds"] >= 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CUDA rungs run on CUDA")
def test_cuda_rungs_are_skipped_with_the_reason_not_invented(ladder_run) -> None:
    report, _, _ = ladder_run
    rungs = {r["name"]: r for r in report["rungs"]}
    for name in ("+ pin_memory/non_blocking", "+ GPU decode"):
        r = rungs[name]
        assert r["status"] == "skipped" and "needs CUDA" in r["reason"]
        assert r["samples_per_s"] is None and r["decision"] is None
    assert rungs["+ torch.compile"]["status"] == "skipped"
    assert "--compile" in rungs["+ torch.compile"]["reason"]
    lines = format_table(report).splitlines()
    assert f"{'+ GPU decode':<34} skipped: needs CUDA (nvJPEG)" in lines


def test_a_rung_is_kept_exactly_when_its_comparison_holds(ladder_run) -> None:
    report, _, _ = ladder_run
    best = "baseline"
    for r in report["rungs"][1:]:
        if r["status"] == "skipped":
            continue
        d = r["decision"]
        assert d["against"] == best  # always the best rung so far
        assert (r["status"] == "measured") == (d["verdict"] == "holds")
        assert d["summary"] == _render(d["comparison"])
        assert (r["status"] == "rejected") == (d["verdict"] == "does not hold")
        assert (r["status"] == "undecided") == (d["verdict"] == "inconclusive")
        assert d["sizing"]["size"] >= 1 and d["samples"].endswith("test samples")
        if r["status"] in ("rejected", "undecided"):
            assert r["reason"].startswith(f"{d['summary']} against {best}: {d['verdict']}")
        else:
            best = r["name"]
    assert report["best"]["name"] == best


def _within(estimate: float, ratios: list[float]) -> bool:
    return min(ratios) * (1 - 1e-9) <= estimate <= max(ratios) * (1 + 1e-9)  # log/exp rounding


def _render(c: dict) -> str:
    lo, hi = c["ci"]
    interval = "[no interval]" if lo is None else f"[{lo:.2f}, {hi:.2f}]"
    return f"{c['speedup']:.2f}x {interval}, {c['rounds']} rounds"


def test_measured_rows_are_consistent_with_their_rounds(ladder_run) -> None:
    report, _, _ = ladder_run
    rows = [r for r in report["rungs"] if r["status"] == "measured"] + [report["ceiling"]]
    rows += [p for p in report["peers"].values() if p["status"] == "measured"]
    rows += [p for p in report["loop_overhead"].values() if p["status"] == "measured"]
    base = report["rungs"][0]
    flops = report["machine"]["flops_per_sample"]["train"]
    for r in rows:
        peak = report["machine"]["peaks"][r["precision"]]["flops_per_s"]
        assert r["mfu"] == pytest.approx(flops * r["samples_per_s"] / peak)
        parts = r["breakdown"]
        assert set(parts) == {"fixed", "data_wait", "host_syncs", "compute", "evaluation", "other"}
        assert sum(v or 0 for v in parts.values()) == pytest.approx(1, abs=0.05)
        assert len(r["seconds"]) == report["final_rounds"]
        assert 0 <= r["stall_fraction"] <= 1 and r["fixed_s"] >= 0
        assert r["steady_samples_per_s"] >= r["samples_per_s"] * 0.999  # fixed costs removed
        assert r["peak_memory_mib"] is None or r["peak_memory_mib"] > 0
        if r is not base:
            c = r["vs_baseline"]
            assert r["speedup"] == c["speedup"] and r["speedup_ci"] == c["ci"]
            ratios = [b / x for b, x in zip(base["seconds"], r["seconds"], strict=True)]
            assert _within(r["speedup"], ratios)  # an estimate inside its rounds
    assert report["ceiling"]["fraction_of_ceiling"] == 1.0


def test_the_ceiling_runs_the_best_rungs_settings(ladder_run) -> None:
    report, _, _ = ladder_run
    top = next(r for r in report["rungs"] if r["name"] == report["best"]["name"])
    assert report["ceiling"]["config"] == top["config"] and report["ceiling"]["loop"] == top["loop"]
    assert list(report["peers"]) == list(PEERS) and list(report["loop_overhead"]) == list(LOOPS)


@pytest.mark.parametrize("group, key", [(g, k) for g in ("peers", "loop_overhead") for k in PEERS])
def test_an_installed_peer_runs_in_the_same_rounds_as_the_best_rung(ladder_run, group, key):
    pytest.importorskip(key)  # the dev extra installs both; without one, see the test below
    report, _, _ = ladder_run
    top = next(r for r in report["rungs"] if r["name"] == report["best"]["name"])
    peer = report[group][key]
    assert peer["status"] == "measured" and peer["name"] == {"peers": PEERS, "loop_overhead":
                                                             LOOPS}[group][key]  # fmt: skip
    vs = peer["vs_best"]
    ratios = [p / b for p, b in zip(peer["seconds"], top["seconds"], strict=True)]
    assert _within(vs["ratio"], ratios) and vs["rounds"] == len(ratios)
    assert peer["how"]  # says how it was run


def test_the_worker_sweep_rows_are_loader_runs_against_no_workers(ladder_run) -> None:
    report, _, _ = ladder_run
    rows = report["loader_sweep"]
    assert set(rows[0]) == {"label", "settings", "samples", "seconds", "startup",
                            "wait_fraction", "samples_per_s", "vs_reference"}  # fmt: skip
    assert rows[0]["settings"] == {"num_workers": 0} and rows[0]["vs_reference"] is None
    assert [r["settings"]["num_workers"] for r in rows[1:]] == default_workers()[1:][-4:]
    workers = report["rungs"][1]
    assert workers["decision"]["setting"] in [r["label"] for r in rows[1:]]
    chosen = next(r for r in rows if r["label"] == workers["decision"]["setting"])
    assert chosen["vs_reference"]["verdict"] == workers["decision"]["verdict"]


def test_decode_once_says_how_much_memory_its_cache_takes(ladder_run) -> None:
    report, _, _ = ladder_run
    rung = next(r for r in report["rungs"] if r["name"] == "+ decode once")
    mib = (32 + 16) * 3 * 16 * 16 / 2**20
    assert f"uint8 cache on the cpu (at most {mib:.1f} MiB)" in rung["adds"]
    assert rung["loader"] == {"kind": "decode_once", "cache_mib": mib}


def test_outputs_are_generated_from_the_report(ladder_run) -> None:
    report, log, out = ladder_run
    assert json.loads((out / "ladder.json").read_text()) == report
    md = (out / "ladder.md").read_text()
    assert markdown_table(report) in md
    assert (out / "ladder.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [t["target"] for t in report["targets"]] == [t["target"] for t in check_targets(report)]
    entries = [r["name"] for r in report["rungs"] if r["status"] == "measured"] + ["ceiling"]
    for key in PEERS:  # each project's loop fed like the best rung, then as people run it
        entries += [report[g][key]["name"] for g in ("loop_overhead", "peers")
                    if report[g][key]["status"] == "measured"]  # fmt: skip
    (first,) = [line.split("] ", 1)[1] for line in log if "] round 1: " in line]
    assert [part.rsplit(" ", 1)[0] for part in first[len("round 1: ") :].split(", ")] == entries
    table = format_table(report).splitlines()
    assert len(table) == 1 + len(report["rungs"]) + 1 + len(PEERS) + len(LOOPS)
    assert "## Where a run's time goes" in md and "## What to change in your code" in md
    assert (out / "recommended.py").read_text().startswith('"""')


def test_cli_prints_the_table_and_every_target(ladder_run, monkeypatch, tmp_path) -> None:
    report, _, _ = ladder_run
    seen = {}

    def fake_run_ladder(settings, *, out_dir, log=None, progress=None):  # measured above
        seen["settings"] = settings
        d2lopt.lab.ladder_report.save_outputs(report, out_dir)
        return report

    monkeypatch.setattr(d2lopt.lab.ladder, "run_ladder", fake_run_ladder)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["ladder", "--quick", "--epochs", "3", "--budget", "9", "--device",
                     "cpu", "--out", str(tmp_path / "cli")])  # fmt: skip
    assert code == 0
    s = seen["settings"]
    assert s.quick and s.epochs == 3 and s.budget_seconds == 9.0  # flags override the preset
    lines = stdout.getvalue().splitlines()
    table = format_table(report).splitlines()
    assert lines[: len(table)] == table
    targets = [f"target: {t['target']}: {t['text']} ({describe_target(t)})" for t in
               report["targets"]]  # fmt: skip
    assert lines[len(table) : len(table) + len(targets)] == targets
    assert lines[len(table) + len(targets) + 1].startswith("Kept: ")
    assert (tmp_path / "cli" / "ladder.json").is_file()


# ------------------------------------------------------------------------------ your data
def test_a_learners_data_and_model_climb_the_rungs_that_apply(
    user_module, tmp_path, monkeypatch
) -> None:
    find_spec = importlib.util.find_spec  # this run also plays a machine without Lightning
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "lightning" else find_spec(name, *a),
    )
    settings = LadderSettings(**TOY | {"n_train": 24}, dataset="mine:data", model="mine:mlp")
    report, _ = _run(settings, tmp_path / "out")
    for group, labels in (("peers", PEERS), ("loop_overhead", LOOPS)):
        peer = report[group]["lightning"]  # optional: skipped, saying how to install it
        assert peer["name"] == labels["lightning"] and peer["status"] == "skipped"
        assert peer["reason"] == "not installed: pip install lightning"
    rungs = {r["name"]: r for r in report["rungs"]}
    assert report["data"]["available"] == [36, 4] and report["data"]["capped"] == [24, 4]
    assert (
        "of 36 training and 4 of 4 test samples (at most 24: --n-train)"
        in (report["data"]["final_rounds"])
    )
    assert "seeded 10% held out (4 of 40 samples)" in report["workload"]
    assert report["workload"].endswith("; mine:mlp")
    assert rungs["+ decode once"]["status"] == "skipped"
    assert "__getitem__ is opaque" in rungs["+ decode once"]["reason"]
    assert rungs["+ channels_last"]["reason"] == (
        "needs 4-D image batches; --dataset gives samples of shape (6,)"
    )
    assert rungs["baseline"]["status"] == "measured" and report["ceiling"]["samples_per_s"] > 0


def test_user_data_is_split_with_a_seeded_tenth_held_out_unless_given_a_pair(user_module):
    train, test, how = load_user_data("mine:data", seed=5)
    again, _, _ = load_user_data("mine:data", seed=5)
    assert (len(train), len(test)) == (36, 4) and how.startswith("a seeded 10% held out")
    assert list(train.indices) == list(again.indices)  # seeded: the same split every run
    assert not set(train.indices) & set(test.indices)
    train, test, how = load_user_data("mine:pair")
    assert (len(train), len(test), how) == (30, 40, "its own (train, test) pair")
    assert isinstance(load_user_model("mine:mlp")(), torch.nn.Module)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "mine"], "--dataset: expected 'module:attr'"),
        (["--dataset", "nowhere_xyz:data"], "--dataset: cannot import module 'nowhere_xyz'"),
        (["--dataset", "mine:missing"], "--dataset: module 'mine' has no attribute 'missing'"),
        (["--dataset", "mine:number"], "--dataset: mine:number gives a int, not a map-style"),
        (["--dataset", "mine:stream"], "--dataset: mine:stream gives a Stream, not a map-style"),
        (["--dataset", "mine:floats"], "--dataset: y of an item of mine:floats is a torch.Tensor"),
        (["--model", "mine:instance"], "--model: mine:instance is a model instance"),
        (["--model", "mine:not_a_model"], "--model: mine:not_a_model() returned a int"),
        (["--model", "mine:number"], "--model: mine:number is a int, not a function"),
        (["--dataset", "mine:data", "--model", "mine:wrong_width"],
         "--model: mine:wrong_width does not accept the data's batches (X (2, 6), y (2,))"),
    ],
)  # fmt: skip
def test_bad_data_or_model_is_one_line_naming_the_flag(user_module, capsys, args, message):
    code = main(["ladder", "--quick", "--device", "cpu", "--out", "never", *args])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith(f"d2lopt ladder: error: {message}"), lines[0]
    assert not Path("never").exists()  # nothing written before the inputs were checked


# ------------------------------------------------------------------------------ pure logic
def _comparison(speedup: float, lo: float, hi: float, verdict: str) -> Comparison:
    return Comparison("cand vs prev", speedup, (lo, hi), 8, verdict, "why", 0.05, 0.95,
                      (1.0,) * 8, (1 / speedup,) * 8)  # fmt: skip


def test_the_climb_keeps_a_rung_only_when_the_comparison_holds() -> None:
    from d2lopt.lab.ladder import Rung, _Climb
    from d2lopt.measure import Sizing

    climb = _Climb.__new__(_Climb)  # the decision rule alone, without a workload
    climb.best = Rung("baseline", "", None)
    climb.rungs, climb.log = [climb.best], lambda line: None
    climb.wl = type("W", (), {"usage": staticmethod(lambda batches: f"{batches * 16} samples")})
    fits = Sizing(4, 1.0, 12, 12, ((1, 0.3), (2, 0.5), (4, 1.0)), 1.8, "4 batches an epoch")
    short = Sizing(1, 9.0, 2, 12, ((1, 9.0),), 9.0, "a round costs 9.00 s even at 1 batch")
    for name, c, sizing in [
        ("faster", _comparison(1.60, 1.40, 1.80, "holds"), fits),
        ("noise", _comparison(1.20, 0.90, 1.60, "inconclusive"), fits),
        ("slower", _comparison(0.80, 0.70, 0.90, "does not hold"), fits),
        ("unaffordable", _comparison(0.50, 0.40, 0.60, "inconclusive"), short),
    ]:
        climb.judge(Rung(name, "", None), c, "passes", sizing)
    kept = [r.name for r in climb.rungs if r.status == "measured"]
    assert kept == ["baseline", "faster"] and climb.best.name == "faster"
    noise, slower, unaffordable = climb.rungs[2:]
    assert noise.decision["against"] == slower.decision["against"] == "faster"
    assert noise.status == "undecided" and slower.status == "rejected"
    assert noise.reason == "1.20x [0.90, 1.60], 8 rounds against faster: inconclusive (why)"
    assert slower.reason == "0.80x [0.70, 0.90], 8 rounds against faster: does not hold"
    assert unaffordable.status == "undecided"  # never rejected for want of rounds
    assert unaffordable.reason.endswith("(why; a round costs 9.00 s even at 1 batch)")
    assert noise.decision["samples"] == "64 samples" and noise.decision["sizing"]["fits"]


def test_run_stats_separate_fixed_costs_and_stalls() -> None:
    s = RunStats(samples=100, seconds=2.0, startup=0.3, first_step=0.5, step=0.1,
                 waited=0.2, stepped=0.6)  # fmt: skip
    assert s.fixed == pytest.approx(0.3 + 0.4)  # start-up + the first step's extra time
    assert s.stall_fraction == pytest.approx(0.25)
    assert s.steady_samples_per_s == pytest.approx(100 / 1.3)


def _report(best: tuple, ceiling: tuple, peers: dict, device: str = "cpu") -> dict:
    return {
        "device_type": device,
        "best": {"speedup": best[0], "speedup_ci": list(best[1:]),
                 "fraction_of_ceiling": ceiling[0], "fraction_ci": list(ceiling[1:])},
        "peers": {k: {"status": "measured", "vs_best": {"ratio": v[0], "ci": list(v[1:])}}
                  for k, v in peers.items()},
    }  # fmt: skip


def test_targets_are_judged_on_their_intervals() -> None:
    met = check_targets(
        _report(
            (2.0, 1.8, 2.2),
            (0.95, 0.91, 0.99),
            {"d2l": (1.3, 1.1, 1.5), "lightning": (1.2, 1.05, 1.4)},
        )
    )
    assert [t["status"] for t in met] == ["met"] * 4
    mixed = check_targets(
        _report(
            (1.4, 1.3, 1.45),
            (0.85, 0.8, 0.95),
            {"d2l": (1.1, 0.9, 1.3), "lightning": (0.9, 0.8, 0.95)},
        )
    )
    assert [t["status"] for t in mixed] == ["missed", "not established", "not established",
                                            "missed"]  # fmt: skip
    assert [describe_target(t) for t in mixed] == [
        "missed by 0.10",
        "not established: 0.85 with the interval 0.80-0.95; met needs >= 0.9 with the low end "
        ">= 0.85",
        "not established: the interval 0.90-1.30 straddles 1",
        "missed by 0.10",
    ]
    gpu = check_targets(_report((2.5, None, None), (1.0, 1.0, 1.0), {}, device="cuda"))
    assert gpu[0]["target"] == "best rung >= 3x baseline" and len(gpu) == 2
    assert describe_target(gpu[0]) == "not established: too few paired rounds for an interval"


def test_a_peer_that_did_not_run_is_not_judged() -> None:
    report = _report((2.0, 1.8, 2.2), (0.95, 0.91, 0.99), {"d2l": (1.3, 1.1, 1.5)})
    report["peers"]["lightning"] = {"status": "skipped", "reason": "not installed"}
    assert [t["target"] for t in check_targets(report)][-1] == (
        "best rung ahead of d2l as its book runs it"
    )


# ------------------------------------------------------------------------------ settings/CLI
def test_presets_scale_and_validate() -> None:
    quick = LadderSettings.preset(quick=True, device="cpu")
    full = LadderSettings.preset(device="cpu")
    assert quick.quick and quick.n_train < full.n_train
    assert quick.budget_seconds < 120 and full.budget_seconds < 600  # the promised budgets
    assert LadderSettings.preset(quick=True, device="cpu", epochs=None).epochs == quick.epochs
    for bad in (
        {"batch_size": 64, "n_train": 32},
        {"image_size": 4},
        {"epochs": 0},
        {"max_rounds": 1},
        {"budget_seconds": 0},
        {"n_test": 20_000},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            LadderSettings(**bad)


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--batch-size", "64", "--n-train", "32"], "--batch-size"),
        (["--epochs", "0"], "--epochs"),
        (["--image-size", "4"], "--image-size"),
        (["--device", "tpu"], "--device"),
        (["--rounds", "1"], "--rounds"),
        (["--budget", "0"], "--budget"),
        (["--bogus"], "--bogus"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(capsys, args, flag) -> None:
    try:
        code = main(["ladder", *args])
    except SystemExit as exc:  # argparse rejects the flag before the command runs
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and "Traceback" not in err


def test_cli_unwritable_out_is_a_usage_error(tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["ladder", "--quick", "--out", str(blocker / "sub")]) == 2
    assert "--out" in capsys.readouterr().err


# ------------------------------------------------------------------------------ README
def test_the_readme_ladder_section_is_the_scripts_output_for_the_committed_json() -> None:
    script = runpy.run_path(str(ROOT / "benchmarks" / "ladder_table.py"))
    readme = (ROOT / "README.md").read_text()
    start, end = script["START"], script["END"]
    committed = readme[readme.index(start) + len(start) : readme.index(end)].strip("\n")
    assert committed == script["section"]().strip("\n")
    result = json.loads((script["RESULTS"] / "ladder.json").read_text())
    runs = {run: json.loads((ROOT / run / "ladder.json").read_text()) for run in script["RUNS"]}
    assert readme_section(result, script["FOLDER"], runs).strip("\n") == committed
    assert result["schema"] == 3 and result["hardware"]["name"]  # the hardware is named


def test_prose_about_the_run_is_computed_from_its_rounds() -> None:
    from d2lopt.lab.ladder_report import step_ups, where_the_time_goes

    def rung(name, seconds, status="measured"):
        return {"name": name, "status": status, "seconds": seconds}

    base = [4.0, 4.4, 3.6, 4.2, 3.8, 4.0]
    report = {
        "settings": {"confidence": 0.95, "min_effect": 0.05},
        "rungs": [
            rung("baseline", base),
            rung("+ AMP", None, "rejected"),
            rung("+ decode once", [s / 2 for s in base]),  # exactly 2x in every round
            rung("+ loop hygiene", [s / 2.5 for s in base]),  # then exactly 1.25x
        ],
        "best": {"name": "+ loop hygiene", "speedup": 2.5, "speedup_ci": [2.5, 2.5],
                 "fraction_of_ceiling": 0.8, "fraction_ci": [0.75, 0.85],
                 "stall_fraction": 0.1, "fixed_s": 0.2, "steady_samples_per_s": 900.0},
        "ceiling": {"stall_fraction": 0.0, "fixed_s": 0.05, "steady_samples_per_s": 1100.0},
    }  # fmt: skip
    steps = step_ups(report)
    assert [(s["name"], s["below"]) for s in steps] == [
        ("+ decode once", "baseline"),
        ("+ loop hygiene", "+ decode once"),
    ]
    assert [round(s["ratio"], 6) for s in steps] == [2.0, 1.25]
    text = where_the_time_goes(report)
    assert (
        "largest single step in the final rounds was **+ decode once**: 2.00x [2.00, 2.00]" in text
    )
    assert "waits for its next batch in 10% of its training loop" in text
    report["rungs"] = report["rungs"][:2]
    assert where_the_time_goes(report).startswith("No rung beat the baseline")


class _SimulatedGpu:
    """A host clock and one stream: an event completes when the stream reaches it."""

    def __init__(self) -> None:
        self.host, self.free = 0.0, 0.0

    def event(self):
        gpu = self

        class Event:
            def record(self) -> None:
                self.t = max(gpu.host, gpu.free)

            def elapsed_time(self, end) -> float:
                return (end.t - self.t) * 1e3  # ms, as torch.cuda.Event

        return Event()

    def queue_step(self, seconds: float) -> None:  # the host queues, the GPU runs later
        self.free = max(self.free, self.host) + seconds
        self.host += 0.01

    def batches(self, n: int, *, sync: bool, host_seconds: float = 0.0):
        for _ in range(n):
            self.host += host_seconds
            if sync:  # a blocking copy from pageable memory waits for the queued step
                self.host = max(self.host, self.free)
            yield torch.zeros(1), torch.zeros(4)


def _timed_epoch(gpu: _SimulatedGpu, monkeypatch, **batches) -> RunStats:

    monkeypatch.setattr(d2lopt.lab.ladder.time, "perf_counter", lambda: gpu.host)
    timed = Timed(gpu.batches(6, **batches), 0.0, torch.device("cuda"), event=gpu.event)
    for _ in timed:
        gpu.queue_step(1.0)
    return timed.stats(gpu.free)


def test_a_hidden_sync_in_the_loader_is_not_booked_as_a_data_stall(monkeypatch) -> None:
    """Issue 24.4: on CUDA the host time inside next() includes the queued step a blocking
    copy waits for; the events see a device that never idled."""
    gpu = _SimulatedGpu()
    stats = _timed_epoch(gpu, monkeypatch, sync=True)
    host_fraction = 4.95 / (4.95 + 0.05)  # what the host clock alone would have said
    assert host_fraction > 0.9
    assert stats.stall_fraction == pytest.approx(0.0)
    assert stats.stepped == pytest.approx(5 * 1.0)  # five steady steps of GPU time


def test_a_slow_loader_is_a_stall_on_the_device_clock_too(monkeypatch) -> None:
    gpu = _SimulatedGpu()
    stats = _timed_epoch(gpu, monkeypatch, sync=False, host_seconds=3.0)
    # each batch comes 3 s after the last was asked for; the step queued before it ran 1 s
    assert stats.waited == pytest.approx(5 * (3.0 - 0.99))
    assert stats.stall_fraction == pytest.approx(5 * 2.01 / (5 * 2.01 + 5 * 1.0))


def test_peak_memory_on_cuda_is_the_runs_own_peak(monkeypatch) -> None:
    """Issue 24.5: reset_peak_memory_stats sets the peak to what is allocated now; the run's
    own peak is the rise above that, not the absolute max_memory_allocated."""
    calls = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d: 900 * 2**20)  # left by others
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d: 1000 * 2**20)
    with PeakMemory(torch.device("cuda")) as mem:
        pass
    assert calls == ["reset"] and mem.mib == pytest.approx(100.0)


def test_the_ceilings_data_leaves_the_device_with_its_run() -> None:
    """Issue 24.5: the ceiling's batches are kept on the host and copied per ceiling run,
    so later rungs do not carry the data set on the GPU."""
    from d2lopt.lab.ladder import Workload

    wl = Workload.__new__(Workload)  # the cache alone, without building a workload
    wl.device, wl._device_batches, wl.samples = torch.device("meta"), {}, None
    wl.train_set = torch.utils.data.TensorDataset(torch.zeros(10, 3), torch.arange(10))
    wl.s = LadderSettings(batch_size=4)
    first = wl.device_batches(train=True)
    assert [X.device.type for X, _ in first] == ["meta"] * 3
    assert all(X.device.type == "cpu" for X, _ in wl._device_batches[True, None])  # kept: host
    again = wl.device_batches(train=True, limit=1)
    assert len(again) == 1 and again[0][0] is not first[0][0]  # a fresh copy per call


def test_the_pinned_rung_is_measured_with_its_own_copies_and_step(monkeypatch) -> None:
    """Issue 24.3: the candidate's batches are copied non_blocking and trained by a step
    built from the candidate's config (pinned labels copied asynchronously); the reference
    runs as the previous config does; the config kept is the one measured."""
    import types

    from d2lopt import TrainConfig
    from d2lopt.lab.ladder import Rung, _Climb

    built, seen = [], {}

    def train_step(net, config):
        built.append(config)
        return f"step{len(built)}"

    def measure_loaders(makers, **kwargs):
        seen.update(kwargs, labels=list(makers))
        run = types.SimpleNamespace(vs_reference=_comparison(1.5, 1.2, 1.8, "holds"),
                                    to_dict=lambda: {})  # fmt: skip
        return types.SimpleNamespace(runs={label: run for label in makers})

    monkeypatch.setattr(d2lopt.lab.ladder, "train_step", train_step)
    monkeypatch.setattr(d2lopt.lab.ladder, "measure_loaders", measure_loaders)
    monkeypatch.setattr(d2lopt.lab.ladder, "run_pass", lambda *a, **k: None)  # the probes
    climb = _Climb.__new__(_Climb)
    climb.wl = types.SimpleNamespace(device=torch.device("cuda"), net=lambda: None,
                                     loader=lambda *a, **k: None, largest=4,
                                     usage=lambda batches: "")  # fmt: skip
    climb.s = LadderSettings()
    climb.plan = d2lopt.lab.ladder.Plan(10.0, {})
    climb.best = Rung("baseline", "", TrainConfig(device="cpu", num_epochs=1))
    climb.rungs, climb.log = [climb.best], lambda line: None
    climb.pinned()
    reference, candidate = seen["labels"]
    assert seen["non_blocking"] == {reference: False, candidate: True}
    assert [c.non_blocking for c in built] == [False, True]  # one step per config
    assert seen["step"] == {reference: "step1", candidate: "step2"}
    kept = climb.best
    assert kept.name == "+ pin_memory/non_blocking" and kept.config == built[1]
    assert kept.config.pin_memory and kept.config.non_blocking


def _two_step_report(second_step: list[float]) -> dict:
    """A baseline, a rung that is exactly 2x faster every round, then a second step."""

    def rung(name, seconds):
        return {"name": name, "status": "measured", "seconds": seconds}

    base = [4.0, 4.4, 3.6, 4.2, 3.8, 4.0, 4.1, 3.9]
    first = [s / 2 for s in base]
    return {
        "settings": {"confidence": 0.95, "min_effect": 0.05},
        "rungs": [rung("baseline", base), rung("+ decode once", first),
                  rung("+ AMP", [s / f for s, f in zip(first, second_step, strict=True)])],
        "best": {"name": "+ AMP", "speedup": 3.0, "speedup_ci": [2.8, 3.2],
                 "fraction_of_ceiling": 0.86, "fraction_ci": [0.80, 1.03],
                 "stall_fraction": 0.1, "fixed_s": 0.2, "steady_samples_per_s": 900.0},
        "ceiling": {"stall_fraction": 0.0, "fixed_s": 0.05, "steady_samples_per_s": 1100.0},
    }  # fmt: skip


def test_only_steps_the_intervals_separate_are_ranked() -> None:
    from d2lopt.lab.ladder_report import steps_not_separated, where_the_time_goes

    # 12's committed run: "+ AMP 1.52x [1.35, 1.66]" was called the largest step while
    # "+ decode once 1.43x [1.33, 1.76]" overlaps it: a second step that is sometimes
    # larger, sometimes smaller than 2x cannot be ranked against the first
    report = _two_step_report([2.6, 1.5, 2.4, 1.6, 2.5, 1.7, 2.3, 1.8])
    assert steps_not_separated(report, "+ AMP") == ["+ decode once"]
    text = where_the_time_goes(report)
    assert "largest single step" not in text
    assert "do not rank the largest steps" in text and "cannot say which bought more" in text
    # a second step clearly smaller every round: the first one is named, and ranked
    report = _two_step_report([1.3, 1.25, 1.35, 1.3, 1.28, 1.32, 1.3, 1.27])
    assert steps_not_separated(report, "+ decode once") == []
    assert "largest single step in the final rounds was **+ decode once**" in (
        where_the_time_goes(report)
    )
    with pytest.raises(ValueError, match="name"):
        steps_not_separated(report, "baseline")


def test_a_fraction_of_the_ceiling_is_clipped_at_one_and_says_why() -> None:
    from d2lopt.lab.ladder_report import where_the_time_goes

    report = _two_step_report([1.3, 1.25, 1.35, 1.3, 1.28, 1.32, 1.3, 1.27])
    text = where_the_time_goes(report)
    assert "0.86 [0.80, 1.00] of the ceiling (clipped at 1: no pipeline beats its ceiling)" in text
    report["ceiling"]["seconds"] = [1.0] * 8  # the best rung's runs: 0.77 s; one slow ceiling
    report["ceiling"]["seconds"][3] = 0.5
    report["rungs"][-1]["seconds"] = [0.9] * 8
    text = where_the_time_goes(report)
    assert "the ceiling's own run was the slower one in 7 of 8 rounds" in text
    target = check_targets(report | {"device_type": "cpu", "peers": {}})[1]
    assert target["ci"] == [0.80, 1.0] and target["text"] == "0.86 [0.80, 1.00]"
