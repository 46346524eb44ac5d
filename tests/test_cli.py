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
    """The text report shows this machine's values and each recommended flag with its value."""
    assert main(["env", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    report, recommended = data["report"], data["recommended"]
    assert main(["env"]) == 0
    lines = capsys.readouterr().out.splitlines()
    pytorch = f"  PyTorch             {report['torch']} (torchvision {report['torchvision']}, "
    assert any(line.startswith(pytorch) for line in lines)
    assert f"  Number of GPUs      {report['gpu_count']}" in lines
    for key, value in recommended.items():
        flag = f"  --{key.replace('_', '-'):<20}{'-' if value is None else value}"
        assert any(line.startswith(flag) for line in lines), flag


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


# ------------------------------------------------------------------------------ structure
def test_help_and_a_bad_flag_do_not_import_torch() -> None:
    # a structural check of the light start: --help, a command's --help and a bad flag are
    # answered from argparse alone, without loading PyTorch (or any module that imports it)
    code = (
        "import sys\n"
        "from d2lopt.cli import main\n"
        "for argv in (['--help'], ['train', '--help'], ['ddp', '--help'], ['ladder', '--help'],"
        " ['tune-loader', '--help'], ['env', '--help'], ['train', '--bogus']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('torch' in sys.modules, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stderr.strip().splitlines()[-1] == "False", proc.stderr
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "d2lopt.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "usage: d2lopt" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    assert "torch" not in imported and "d2lopt" in imported


def test_import_d2lopt_exports_the_same_names_lazily() -> None:
    code = (
        "import sys, d2lopt\n"
        "assert 'torch' not in sys.modules\n"
        "from d2lopt import fit, TrainConfig, compare\n"
        "import d2lopt.measure\n"  # the module that defines it
        "assert callable(d2lopt.compare) and d2lopt.compare is compare\n"
        "missing = [n for n in d2lopt.__all__ if not hasattr(d2lopt, n)]\n"
        "assert not missing, missing\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_nothing_below_cli_imports_it() -> None:
    import ast
    from pathlib import Path

    import d2lopt

    package = Path(d2lopt.__file__).parent
    offenders = []
    for path in package.rglob("*.py"):
        parts = path.relative_to(package).with_suffix("").parts
        if parts[0] == "cli":
            continue
        here = ["d2lopt", *parts[:-1]]  # the package this module is in
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = here[: len(here) - node.level + 1] if node.level else []
                module = ".".join([*base, *([node.module] if node.module else [])])
                names = [module, *(f"{module}.{a.name}" for a in node.names)]
            else:
                continue
            if any(n == "d2lopt.cli" or n.startswith("d2lopt.cli.") for n in names):
                offenders.append(f"{'/'.join(parts)}.py:{node.lineno}")
    assert offenders == []


def test_train_and_ddp_flags_come_from_train_config_metadata() -> None:
    from dataclasses import fields

    from d2lopt.config import TrainConfig
    from d2lopt.dist import ddp
    from d2lopt.flags import CONFIG_FLAGS

    train = build_parser()._subparsers._group_actions[0].choices["train"]  # noqa: SLF001
    for parser in (train, ddp.build_parser()):
        actions = {a.dest: a for a in parser._actions}  # noqa: SLF001
        for f in fields(TrainConfig):
            action = actions[f.name]
            assert action.option_strings[0] == CONFIG_FLAGS[f.name]
            assert action.default == f.default
            assert action.choices == f.metadata.get("choices")
    assert CONFIG_FLAGS["num_epochs"] == "--epochs" and CONFIG_FLAGS["batch_size"] == "--batch-size"
    device_flags = [a for a in train._actions if "--device" in a.option_strings]  # noqa: SLF001
    assert len(device_flags) == 1


def test_d2lopt_ddp_passes_the_program_arguments_as_typed(capsys) -> None:
    from d2lopt.cli.ddp import program_argv

    argv = ["--nproc-per-node=2", "--epochs", "3", "--no-pin-memory", "--lr=0.1", "--nnodes", "1",
            "--print-command"]  # fmt: skip
    assert program_argv(argv) == ["--epochs", "3", "--no-pin-memory", "--lr=0.1"]
    assert main(["ddp", *argv]) == 0
    line = capsys.readouterr().out.strip()
    assert line.endswith(" --standalone -m d2lopt.ddp --epochs 3 --no-pin-memory --lr=0.1")


def test_param_error_carries_its_parameter() -> None:
    import pickle

    from d2lopt.errors import ParamError, ParamTypeError, ParamUnavailable

    err = ParamError("amp", "use 'fp16'", owner="TrainConfig")
    assert isinstance(err, ValueError) and err.param == "amp"
    assert str(err) == "TrainConfig.amp: use 'fp16'"
    assert str(err.usage({"amp": "--amp"})) == "--amp: use 'fp16'"  # one wording: the flag first
    for sent in (err, ParamTypeError("dataset", "not a Dataset"), ParamUnavailable("source", "x")):
        again = pickle.loads(pickle.dumps(sent))  # DataLoader workers, spawn: intact
        assert (type(again), str(again), again.param) == (type(sent), str(sent), sent.param)
    assert isinstance(ParamTypeError("dataset", "not a Dataset"), TypeError)
