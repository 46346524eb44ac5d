"""The d2lopt command: env report, a real training run, help on every command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from d2lopt.cli import build_parser, main


def _run(args, env):
    return subprocess.run(
        [sys.executable, "-m", "d2lopt.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_env_json_reports_devices_and_recommendations(cli_env) -> None:
    proc = _run(["env", "--json"], cli_env)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    report, rec = payload["report"], payload["recommended"]
    for key in ("torch", "cuda_available", "gpu_count", "cpu_cores", "cpu_bf16_units", "gloo"):
        assert key in report
    assert rec["num_workers"] == (0 if report["cpu_cores"] <= 2 else report["cpu_cores"] // 2)
    assert rec["pin_memory"] == report["cuda_available"]


def test_env_text_report(capsys) -> None:
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "PyTorch" in out and "Number of GPUs" in out and "--num-workers" in out


def test_every_command_has_help(capsys) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001
    assert {"env", "train"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        assert "usage: d2lopt " + name in capsys.readouterr().out


def test_train_writes_metrics_json_events_and_checkpoint(cli_env, tmp_path) -> None:
    out = tmp_path / "run"
    proc = _run(
        ["train", "--epochs", "2", "--n-train", "1000", "--n-test", "200", "--batch-size", "100",
         "--data", "synthetic", "--out", str(out), "--no-progress"],
        cli_env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    for e in metrics["epochs"]:
        assert {"train_loss", "test_loss", "test_acc", "epoch_time"} <= set(e)
    assert (out / "checkpoint.pt").is_file()
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert "metrics.json" in proc.stdout


def test_bad_value_is_one_line_and_exit_code_2(cli_env) -> None:
    proc = _run(["train", "--batch-size", "zero"], cli_env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--batch-size" in lines[0] and "Traceback" not in proc.stderr
