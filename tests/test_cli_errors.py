"""Every bad flag or value of ``d2lopt``: exit code 2, one line on stderr naming the flag.

Most cases call ``main()`` in this process (fast); a representative set runs the real command
in subprocesses, where a traceback or a second line would be visible to the user.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import d2lopt
from d2lopt.cli import main
from d2lopt.data import synthetic_fashion_mnist

CUDA = torch.cuda.is_available()
MPS = torch.backends.mps.is_available()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A small FashionMNIST in torchvision's idx format (3000 + 500 synthetic images)."""
    root = tmp_path_factory.mktemp("d2lopt-data")
    raw = root / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n, seed in (("train", 3000, 0), ("t10k", 500, 1)):
        images, labels = synthetic_fashion_mnist(n, seed=seed)
        header = struct.pack(">IIII", 0x803, n, 28, 28)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.numpy().tobytes())
        header = struct.pack(">II", 0x801, n)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            header + labels.to(torch.uint8).numpy().tobytes()
        )
    return root


@pytest.fixture(autouse=True)
def _environment(data_root, monkeypatch) -> None:
    monkeypatch.setenv("D2LOPT_DATA", str(data_root))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny runs on a busy machine: no spinning threads
    yield
    torch.set_num_threads(threads)


TRAIN = ["train", "--data", "real", "--batch-size", "100", "--n-test", "100", "--no-progress"]


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory) -> Path:
    """A finished 2-epoch run (mlp, lr 0.05, 3000 samples) to resume with other flags."""
    out = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("D2LOPT_DATA", str(data_root))
        mp.setenv("TQDM_DISABLE", "1")
        assert main([*TRAIN, "--epochs", "2", "--out", str(out)]) == 0
    return out


def _error_line(argv: list[str], capsys) -> str:
    """Run ``main(argv)``; assert exit code 2 and exactly one stderr line; return it."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors exit from parse_args
        code = exc.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("d2lopt")
    return lines[0]


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _file(tmp: Path) -> Path:
    (tmp / "a-file").write_text("not a folder")
    return tmp / "a-file"


def _checkpointed(tmp: Path, content: bytes | None = None) -> Path:
    out = tmp / "run"
    out.mkdir()
    if content is not None:
        (out / "checkpoint.pt").write_bytes(content)
    return out


# (id, argv builder taking a tmp folder, text the one line must contain)
CASES = [
    ("epochs-zero", lambda t: ["train", "--epochs", "0"], "--epochs: must be >= 1"),
    ("epochs-word", lambda t: ["train", "--epochs", "two"], "--epochs: expected a positive"),
    ("batch-negative", lambda t: ["train", "--batch-size", "-5"], "--batch-size"),
    ("workers-negative", lambda t: ["train", "--num-workers", "-1"], "--num-workers"),
    ("workers-thrash", lambda t: ["train", "--num-workers", "100000"], "--num-workers: 100000"),
    (
        "prefetch-no-workers",
        lambda t: ["train", "--prefetch-factor", "4"],
        "--prefetch-factor: needs num_workers > 0 (got 0); set num_workers to 1 or more, or "
        "leave prefetch_factor out",
    ),
    (
        "persistent-no-workers",
        lambda t: ["train", "--persistent-workers"],
        "--persistent-workers: needs num_workers > 0 (got 0); set num_workers to 1 or more, "
        "or leave persistent_workers out",
    ),
    ("device-unknown", lambda t: ["train", "--device", "tpu"], "--device: unknown device 'tpu'"),
    ("device-index", lambda t: ["train", "--device", "cuda:99"], "--device: 'cuda:99'"),
    ("amp-unknown", lambda t: ["train", "--amp", "int8"], "--amp: invalid choice"),
    ("lr-zero", lambda t: ["train", "--lr", "0"], "--lr: must be a finite number > 0"),
    ("lr-nan", lambda t: ["train", "--lr", "nan"], "--lr"),
    ("lr-inf", lambda t: ["train", "--lr", "inf"], "--lr"),
    ("momentum-one", lambda t: ["train", "--momentum", "1"], "--momentum: must be in [0, 1)"),
    ("eval-every-zero", lambda t: ["train", "--eval-every", "0"], "--eval-every"),
    ("seed-negative", lambda t: ["train", "--seed", "-1"], "--seed"),
    (
        "seed-huge",
        lambda t: ["train", "--seed", str(2**40)],
        "--seed: must be in [0, 4294967295]",
    ),
    ("model-unknown", lambda t: ["train", "--model", "resnet"], "--model: invalid choice"),
    ("data-unknown", lambda t: ["train", "--data", "imagenet"], "--data: invalid choice"),
    ("n-train-zero", lambda t: ["train", "--n-train", "0"], "--n-train"),
    (
        "n-train-too-many",
        lambda t: [*TRAIN, "--n-train", "5000", "--out", str(t / "o")],
        "--n-train: the training split has 3000 samples, asked for 5000; ask for at most "
        "3000, or leave it out for all",
    ),
    ("flag-value-to-switch", lambda t: ["train", "--compile=yes"], "--compile"),
    ("flag-unknown", lambda t: ["train", "--bogus"], "unrecognized arguments: --bogus"),
    (
        "out-under-a-file",
        lambda t: [*TRAIN, "--out", str(_file(t) / "sub")],
        "--out: {tmp}/a-file is a file, so {tmp}/a-file/sub cannot be created inside it",
    ),
    (
        "out-is-a-file",
        lambda t: [*TRAIN, "--out", str(_file(t))],
        "--out: {tmp}/a-file is a file, not a folder; give a folder path",
    ),
    (
        "out-holds-a-run",
        lambda t: [*TRAIN, "--out", str(_checkpointed(t, b"x"))],
        "--out: {out} already holds a checkpoint; add --resume",
    ),
    (
        "resume-missing",
        lambda t: [*TRAIN, "--resume", "--out", str(_checkpointed(t))],
        "--resume: no checkpoint at",
    ),
    (
        "resume-corrupt",
        lambda t: [*TRAIN, "--resume", "--out", str(_checkpointed(t, b"junk"))],
        "--resume: checkpoint",
    ),
    (
        "resume-random",
        lambda t: [*TRAIN, "--resume", "--out", str(_checkpointed(t, bytes(512)))],
        "--resume: ",
    ),
    ("env-unknown-flag", lambda t: ["env", "--bogus"], "unrecognized arguments: --bogus"),
    ("env-flag-value", lambda t: ["env", "--json=yes"], "--json: ignored explicit argument"),
    ("no-command", lambda t: [], "missing COMMAND"),
    ("unknown-command", lambda t: ["fly"], "invalid choice: 'fly'"),
]


@pytest.mark.parametrize(("argv", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_code_2(argv, expected, tmp_path, capsys) -> None:
    line = _error_line(argv(tmp_path), capsys)
    assert expected.format(out=tmp_path / "run", tmp=tmp_path) in line


@pytest.mark.skipif(CUDA, reason="checks the message on a machine without CUDA")
def test_cuda_on_a_cpu_only_machine(capsys) -> None:
    line = _error_line(["train", "--device", "cuda"], capsys)
    assert "--device: 'cuda' requested but CUDA is not available" in line and "'cpu'" in line


@pytest.mark.skipif(MPS, reason="checks the message on a machine without Apple MPS")
def test_mps_without_apple_silicon(capsys) -> None:
    line = _error_line(["train", "--device", "mps"], capsys)
    assert "--device: 'mps' requested but Apple MPS is not available" in line


def test_unwritable_out_creates_nothing_on_resume(tmp_path, capsys) -> None:
    out = tmp_path / "never-made"
    _error_line([*TRAIN, "--resume", "--out", str(out)], capsys)
    assert not out.exists()


def test_resume_refuses_a_pickled_object(tmp_path, capsys) -> None:
    out, marker = _checkpointed(tmp_path), tmp_path / "code-ran"
    torch.save({"model": {}, "epoch": 1, "x": _RunsCode(marker)}, out / "checkpoint.pt")
    line = _error_line([*TRAIN, "--resume", "--out", str(out)], capsys)
    assert "--resume: refused to load" in line and "weights_only" in line
    assert not marker.exists()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--lr", "0.1"], "--resume: checkpoint was trained with lr=0.05 but config has lr=0.1"),
        (["--batch-size", "50"], "--batch-size: checkpoint was trained with batch_size=100"),
        (["--model", "cnn"], "was trained with --model mlp; use --model mlp"),  # issue 22
        (["--n-train", "2000"], "--resume: checkpoint was trained on 3000 samples"),
        (["--epochs", "1"], "--epochs: the checkpoint in"),
    ],
    ids=["lr", "batch-size", "model", "n-train", "fewer-epochs"],
)
def test_resume_with_other_flags_is_refused(trained, tmp_path, flags, expected, capsys) -> None:
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    line = _error_line([*TRAIN, "--epochs", "3", "--resume", "--out", str(out), *flags], capsys)
    assert expected in line


def test_resume_with_the_same_flags_works(trained, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    assert main([*TRAIN, "--epochs", "3", "--resume", "--out", str(out)]) == 0
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------- subprocesses
def _commands(tmp: Path) -> list[list[str]]:
    python = [sys.executable, "-m", "d2lopt.cli"]
    script = shutil.which("d2lopt", path=str(Path(sys.executable).parent))
    commands = [
        [*python, "train", "--epochs", "0"],
        [*python, "train", "--device", "cuda:99" if CUDA else "cuda"],
        [*python, "train", "--amp", "int8", "--device", "cpu"],
        [*python, *TRAIN, "--resume", "--out", str(tmp / "empty")],
        [*python, *TRAIN, "--out", str(_file(tmp) / "sub")],
        [*python],
    ]
    if script:  # the console script a learner types
        commands.append([script, "env", "--bogus"])
    return commands


def test_real_commands_exit_2_with_one_line(tmp_path, data_root) -> None:
    env = dict(os.environ, D2LOPT_DATA=str(data_root), TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    running = [
        (
            cmd,
            subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            ),
        )  # fmt: skip
        for cmd in _commands(tmp_path)
    ]  # started together: import time dominates, the two cores share it
    for cmd, proc in running:
        out, err = proc.communicate(timeout=300)
        lines = err.strip().splitlines()
        assert proc.returncode == 2, (cmd, err)
        assert len(lines) == 1 and "Traceback" not in err, (cmd, err)
        assert lines[0].startswith("d2lopt") and ": error: " in lines[0], (cmd, err)
        assert out == "", (cmd, out)


# ------------------------------------------------------------ messages in the user's terms
def test_bf16_on_a_gpu_without_it_speaks_in_flags(monkeypatch, capsys) -> None:
    # a GPU that cannot even emulate bf16 (checked here on any machine: CUDA is faked)
    import contextlib

    from d2lopt import devices

    monkeypatch.setattr(devices, "as_device", lambda d, name="device": torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "device", lambda d: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla K80")
    line = _error_line(["train", "--amp", "bf16", "--device", "cpu"], capsys)
    assert line == (
        "d2lopt train: error: --amp: 'bf16' cannot run on Tesla K80; use 'fp16' "
        "(with its GradScaler) or 'off'"
    )
    with pytest.raises(ValueError, match=r"TrainConfig.amp: 'bf16' cannot run on Tesla K80; "
                       r"use 'fp16'"):  # fmt: skip
        d2lopt.TrainConfig(amp="bf16", device="cpu")  # the Python API keeps its wording


def test_offline_real_data_names_the_folder_and_the_flag(tmp_path, monkeypatch, capsys) -> None:
    from d2lopt import data

    def offline(root, train):
        raise OSError("no network")

    monkeypatch.setattr(data, "_real_fashion_mnist", offline)
    monkeypatch.setenv("D2LOPT_DATA", str(tmp_path / "cache"))
    out = tmp_path / "never-made"
    line = _error_line(["train", "--data", "real", "--out", str(out)], capsys)
    raw = tmp_path / "cache" / "data" / "FashionMNIST" / "raw"
    assert line.startswith("d2lopt train: error: --data: real FashionMNIST could not be downloaded")
    assert f"copy its idx files into {raw}" in line
    assert line.endswith("or use the 'synthetic' source")
    assert "source=" not in line
    assert not out.exists()


def test_resume_on_other_data_names_n_train(trained, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    argv = [*TRAIN, "--epochs", "3", "--resume", "--out", str(out), "--n-train", "2000"]
    line = _error_line(argv, capsys)
    assert line == (
        "d2lopt train: error: --resume: checkpoint was trained on 3000 samples, this run has "
        "2000; train on the same 3000 (n_train 3000), or use a new out_dir"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--n-train", "5000"],  # the data check, after the config's
        ["--prefetch-factor", "4"],  # the config check
        ["--resume"],  # no checkpoint to continue
    ],
    ids=["n-train", "config", "resume"],
)
def test_a_refused_run_leaves_no_out_folder(argv, tmp_path, capsys) -> None:
    out = tmp_path / "a" / "b"
    _error_line([*TRAIN, "--out", str(out), *argv], capsys)
    assert not (tmp_path / "a").exists()


def test_a_bug_keeps_its_traceback(monkeypatch) -> None:
    # only errors about a parameter the command has a flag for become one line; a
    # ValueError from a bug, or a ParamError about an internal argument, propagates
    from d2lopt.cli import train as train_command
    from d2lopt.errors import ParamError

    def broken(args):
        raise ParamError("criterion", "a bug in the program, not in the command line")

    monkeypatch.setattr(train_command, "_datasets", broken)
    with pytest.raises(ParamError, match="criterion"):
        main(["train", "--out", "unused"])

    def plain(args):
        raise ValueError("x: looks like a validation message, is a bug")

    monkeypatch.setattr(train_command, "_datasets", plain)
    with pytest.raises(ValueError, match="is a bug"):
        main(["train", "--out", "unused"])
