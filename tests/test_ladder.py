"""Correctness of d2lopt.ladder and `d2lopt ladder` (speed targets live in the notebook).

One tiny end-to-end run (32 images of 16px, one epoch, one round) feeds most tests: they
check the report's shape and internal consistency, never how fast anything was.
"""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest
import torch

import d2lopt.ladder
from d2lopt.cli import main
from d2lopt.ladder import (
    LadderSettings,
    check_targets,
    describe_target,
    format_table,
    ladder_markdown,
    plot_ladder,
    run_ladder,
)

RUNG_NAMES = [
    "baseline",
    "+ loader workers",
    "+ pin_memory/non_blocking",
    "+ AMP",
    "+ loop hygiene",
    "+ channels_last",
    "+ torch.compile",
]


@pytest.fixture(scope="module")
def ladder_run(tmp_path_factory):
    """One toy-sized ladder (32 images of 16px, one epoch, one round): (report, log, out)."""
    tmp = tmp_path_factory.mktemp("ladder")
    settings = LadderSettings(
        n_train=32,
        n_test=16,
        image_size=16,
        batch_size=16,
        epochs=1,
        rounds=1,
        warmup=0,
        sweep_batches=1,
        sweep_rounds=1,
        probe_time=0.01,
        device="cpu",
        data_dir=str(tmp / "data"),
    )  # small for testing efficiency
    log: list[str] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # toy tensors: one thread is faster, and immune to a busy machine
    try:
        report = run_ladder(settings, out_dir=tmp / "out", log=log.append)
    finally:
        torch.set_num_threads(threads)
    return report, log, tmp / "out"


def test_json_has_the_documented_shape(ladder_run) -> None:
    report, _, _ = ladder_run
    assert isinstance(report["device"], str) and report["device"].startswith("cpu")
    ceiling = report["ceiling_samples_per_s"]
    assert isinstance(ceiling, float) and ceiling > 0
    assert set(report["peers"]) == {"d2l", "lightning"}
    assert all(isinstance(v, float) and v > 0 for v in report["peers"].values())
    for rung in report["rungs"]:
        assert {"name", "samples_per_s", "speedup", "status"} <= set(rung)
    hw = report["hardware"]
    assert hw["cpu_cores"] >= 1 and hw["name"] and report["versions"]["torch"] == torch.__version__


def test_every_rung_is_present_in_order_and_baseline_is_measured(ladder_run) -> None:
    report, _, _ = ladder_run
    assert [r["name"] for r in report["rungs"]] == RUNG_NAMES
    base = report["rungs"][0]
    assert base["status"] == "measured" and base["speedup"] == 1.0
    assert base["config"]["num_workers"] == 0 and base["config"]["amp"] == "off"
    assert base["loop"] == "article"
    hygiene = report["rungs"][4]
    assert hygiene["status"] == "measured" and hygiene["loop"] == "fit"
    assert hygiene["config"]["eval_every"] == report["settings"]["epochs"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the pinned-memory rung runs on CUDA")
def test_gpu_only_rung_is_skipped_not_invented_on_cpu(ladder_run) -> None:
    report, _, _ = ladder_run
    pin = report["rungs"][2]
    assert pin["status"] == "skipped" and "CUDA" in pin["reason"]
    assert pin["samples_per_s"] is None and pin["speedup"] is None
    assert "skipped: needs a CUDA GPU" in format_table(report)


def test_optional_compile_rung_is_skipped_unless_asked(ladder_run) -> None:
    report, _, _ = ladder_run
    compiled = report["rungs"][-1]
    assert compiled["status"] == "skipped" and "--compile" in compiled["reason"]


def test_statuses_and_ratios_are_consistent(ladder_run) -> None:
    report, _, _ = ladder_run
    base = report["rungs"][0]["samples_per_s"]
    ceiling = report["ceiling_samples_per_s"]
    for r in report["rungs"]:
        assert r["status"] in {"measured", "skipped", "rejected"}
        if r["status"] == "measured":
            assert math.isclose(r["speedup"], r["samples_per_s"] / base)
            assert math.isclose(r["fraction_of_ceiling"], r["samples_per_s"] / ceiling)
            assert r["peak_memory_mib"] is None or r["peak_memory_mib"] > 0
        else:
            assert r["reason"] and r["samples_per_s"] is None
        if r["status"] == "rejected" and r["probe"] is not None:  # a probe decided it
            assert r["probe"]["verdict"] != "holds"
    measured = [r for r in report["rungs"] if r["status"] == "measured"]
    assert report["best"]["name"] == max(measured, key=lambda r: r["samples_per_s"])["name"]


def test_each_measured_rung_keeps_what_the_rungs_below_adopted(ladder_run) -> None:
    report, _, _ = ladder_run
    measured = [r["config"] for r in report["rungs"] if r["status"] == "measured"]
    for below, above in zip(measured, measured[1:], strict=False):
        changed = {k for k in below if below[k] != above[k]}
        assert len(changed - {"eval_every"}) <= 3  # one optimization (workers: 3 knobs)
        for key in ("num_workers", "amp", "channels_last"):
            if below[key] not in (0, "off", False):
                assert above[key] == below[key]
    # ceiling and peers run with the top rung's settings
    assert report["ceiling"]["config"] == measured[-1]


def test_rung_two_adopts_the_sweep_winner_only_if_it_clearly_beats_no_workers(ladder_run):
    report, _, _ = ladder_run
    sweep = report["loader_sweep"]
    best = max(sweep, key=lambda r: (r["samples_per_s"], -r["num_workers"]))
    default = next(r for r in sweep if r["num_workers"] == 0)
    workers = report["rungs"][1]
    assert math.isclose(
        workers["probe"]["speedup"], best["samples_per_s"] / default["samples_per_s"]
    )
    if workers["status"] == "measured":
        assert workers["probe"]["verdict"] == "holds"
        assert workers["config"]["num_workers"] == best["num_workers"] > 0
        assert workers["config"]["prefetch_factor"] == best["prefetch_factor"]
        assert workers["config"]["persistent_workers"] == best["persistent_workers"]
    else:
        assert workers["status"] == "rejected"
        assert best["num_workers"] == 0 or workers["probe"]["verdict"] != "holds"


def test_outputs_markdown_plot_and_progress_log(ladder_run) -> None:
    report, log, out = ladder_run
    assert json.loads((out / "ladder.json").read_text()) == report
    md = (out / "ladder.md").read_text()
    assert report["device"] in md and "| rung | adds |" in md and "## Targets" in md
    assert (out / "ladder.png").stat().st_size > 0
    assert [t["target"] for t in report["targets"]] == [t["target"] for t in check_targets(report)]
    assert any("round 1/1" in line for line in log)


def test_cli_prints_the_table_and_targets(ladder_run, monkeypatch, tmp_path) -> None:
    report, _, _ = ladder_run
    seen = {}

    def fake_run_ladder(settings, *, out_dir, log=None):  # the measuring is tested above
        seen["settings"] = settings
        d2lopt.ladder.save_outputs(report, out_dir)
        return report

    monkeypatch.setattr(d2lopt.ladder, "run_ladder", fake_run_ladder)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(
            [
                "ladder",
                "--quick",
                "--epochs",
                "3",
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "cli"),
            ]
        )
    assert code == 0
    assert seen["settings"].quick and seen["settings"].epochs == 3  # flag overrides the preset
    text = stdout.getvalue()
    assert "samples/s" in text and "ceiling (data on device)" in text
    assert "peer: Lightning Trainer" in text and "target: best rung" in text
    assert (tmp_path / "cli" / "ladder.json").is_file()


# ------------------------------------------------------------------------------ pure logic
def _synthetic_report(best: float, d2l: float, lightning: float, ceiling: float) -> dict:
    rung = {
        "name": "baseline",
        "status": "measured",
        "samples_per_s": 100.0,
        "speedup": 1.0,
        "fraction_of_ceiling": 100.0 / ceiling,
        "peak_memory_mib": 10.0,
        "adds": "",
        "reason": "",
    }
    top = rung | {
        "name": "+ loop hygiene",
        "samples_per_s": best,
        "speedup": best / 100.0,
        "fraction_of_ceiling": best / ceiling,
    }
    skipped = {
        "name": "+ pin_memory/non_blocking",
        "status": "skipped",
        "adds": "",
        "reason": "needs a CUDA GPU",
        "samples_per_s": None,
        "speedup": None,
    }
    peer = {
        "samples_per_s": d2l,
        "speedup": d2l / 100,
        "fraction_of_ceiling": d2l / ceiling,
        "peak_memory_mib": None,
    }
    return {
        "device": "cpu: test",
        "device_type": "cpu",
        "rungs": [rung, skipped, top],
        "best": {
            "name": top["name"],
            "samples_per_s": best,
            "speedup": best / 100.0,
            "fraction_of_ceiling": best / ceiling,
        },
        "peers": {"d2l": d2l, "lightning": lightning},
        "peer_details": {"d2l": peer, "lightning": peer | {"samples_per_s": lightning}},
        "ceiling_samples_per_s": ceiling,
        "ceiling": {
            "samples_per_s": ceiling,
            "speedup": ceiling / 100,
            "fraction_of_ceiling": 1.0,
            "peak_memory_mib": None,
        },
    }


def test_targets_are_judged_from_the_numbers() -> None:
    met = check_targets(_synthetic_report(best=200, d2l=150, lightning=190, ceiling=210))
    assert [t["met"] for t in met] == [True, True, True, True]
    missed = check_targets(_synthetic_report(best=140, d2l=150, lightning=140, ceiling=200))
    assert [t["met"] for t in missed] == [False, False, False, False]  # a tie is not "ahead"
    assert math.isclose(missed[0]["short_by"], 0.1) and math.isclose(missed[1]["short_by"], 0.2)
    assert [describe_target(t) for t in missed] == [
        "missed by 0.10",
        "missed by 0.20",
        "missed by 0.07",
        "tie: not ahead",
    ]
    assert describe_target(met[0]) == "met"


def test_table_shows_skipped_rungs_with_their_reason() -> None:
    report = _synthetic_report(best=200, d2l=150, lightning=190, ceiling=210)
    report["targets"] = check_targets(report)
    table = format_table(report)
    assert "skipped: needs a CUDA GPU" in table and "2.00x" in table and "0.95" in table
    report |= {
        "hardware": {"cpu_model": "x", "cpu_cores": 2, "memory_gib": 1},
        "versions": {"torch": "t"},
        "workload": "w",
        "memory_kind": "m",
        "elapsed_s": 1.0,
        "settings": {"batch_size": 1, "epochs": 1, "warmup": 1, "rounds": 3, "quick": True},
    }
    md = ladder_markdown(report)
    assert "missed by" not in md and "d2lopt ladder --quick" in md


def test_a_peer_that_is_not_installed_is_skipped_not_judged() -> None:
    report = _synthetic_report(best=200, d2l=150, lightning=190, ceiling=210)
    report["peers"]["lightning"] = None
    report["peer_details"]["lightning"] = {
        "status": "skipped",
        "reason": "not installed: pip install lightning",
    }
    targets = check_targets(report)
    assert len(targets) == 3 and not any("Lightning" in t["target"] for t in targets)
    assert "skipped: not installed: pip install lightning" in format_table(report)
    ax = plot_ladder(report)
    assert any(t.get_text() == "skipped: not installed" for t in ax.texts)


# ------------------------------------------------------------------------------ settings/CLI
def test_presets_scale_and_validate() -> None:
    quick = LadderSettings.preset(quick=True, device="cpu")
    assert quick.quick and quick.image_size < LadderSettings.preset(device="cpu").image_size
    assert LadderSettings.preset(quick=True, device="cpu", epochs=None).epochs == quick.epochs
    for bad in (
        {"batch_size": 64, "n_train": 32},
        {"image_size": 4},
        {"epochs": 0},
        {"rounds": True},
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
        (["--warmup", "-1"], "--warmup"),
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
