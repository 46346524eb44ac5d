"""Every command line the README shows parses with the real parsers (nothing is run).

A reader copies these lines: each ```bash line is split the way a shell would, then handed
to the parser of the program it starts (``d2lopt``'s argparse, torchrun's, ``d2lopt.ddp``'s,
papermill's click command, ``make -n``). Flags named in inline code (``d2lopt train --out DIR
--resume``) must exist too. A command this test does not know fails, so new README lines
cannot slip past it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# Values for the shell variables the README's SLURM script uses.
SHELL_VARS = {"SLURM_NNODES": "2", "SLURM_JOB_ID": "4242", "head_node": "node01"}
SKIPPED = {"export", "source", ".", "cd", "sbatch"}  # shell set-up, not a course command
WRAPPERS = {"srun", "sudo", "exec"}  # launch the command that follows


def _bash_lines() -> list[str]:
    """Logical lines of the ```bash blocks: continuations joined, comments dropped.

    A comment that offers an alternative (``# or: d2lopt ddp ... \\`` over several
    commented lines) is a command too: it is kept without its ``#`` and ``or:``.
    """
    lines = []
    for block in re.findall(r"^```bash\n(.*?)^```", README, flags=re.S | re.M):
        block = re.sub(r"\\\n\s*#?", " ", block)  # continuation lines, commented ones too
        for line in block.splitlines():
            line = line.strip()
            alternative = re.match(r"#\s*or:\s*(.+)", line)
            if alternative:
                line = alternative.group(1)
            elif not line or line.startswith("#"):
                continue
            lines.append(line)
    return lines


def _argv(line: str) -> list[str]:
    """The command's argv: variables substituted, env assignments and wrappers dropped."""
    words = shlex.split(line, comments=True)

    def expand(word: str) -> str:
        def value(m: re.Match) -> str:
            name = m.group(1) or m.group(2)
            assert name in SHELL_VARS, f"README uses ${name}: give it a value in SHELL_VARS"
            return SHELL_VARS[name]

        return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, word)

    words = [expand(w) for w in words]
    while words and (re.match(r"^\w+=", words[0]) or words[0] in WRAPPERS):
        words.pop(0)  # OMP_NUM_THREADS=1 torchrun ..., srun torchrun ...
    return words


def _is_command(line: str) -> bool:
    if re.match(r"\w+=\$\(", line):  # head_node=$(scontrol ...): shell set-up
        return False
    return line.split()[0] not in SKIPPED


COMMANDS = [line for line in _bash_lines() if _is_command(line)]


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"{shlex.join(argv)!r} does not parse: {err.getvalue().strip()}")


def _make_env() -> dict[str, str]:
    drop = ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")  # when run under `make test`
    return {k: v for k, v in os.environ.items() if k not in drop}


def test_the_readme_shows_the_commands_this_test_checks() -> None:
    programs = {os.path.basename(_argv(c)[0]) for c in COMMANDS}
    assert {"make", "d2lopt", "torchrun", "papermill"} <= programs, programs
    assert any("tune-loader --dataset" in c for c in COMMANDS)


@pytest.mark.parametrize("line", COMMANDS, ids=[" ".join(_argv(c)[:2]) for c in COMMANDS])
def test_readme_command_parses(line: str) -> None:
    argv = _argv(line)
    program = os.path.basename(argv[0])
    if program == "d2lopt":
        from d2lopt.cli import build_parser

        args = _parse(build_parser(), argv[1:])
        assert args.command == argv[1]
    elif program == "torchrun":
        from torch.distributed.run import get_args_parser

        from d2lopt.dist.ddp import build_parser as ddp_parser

        launch = _parse(get_args_parser(), argv[1:])
        assert launch.module and launch.training_script == "d2lopt.ddp", line
        _parse(ddp_parser(), launch.training_script_args)  # the part after -m d2lopt.ddp
    elif program == "papermill":
        import click
        from papermill.cli import papermill

        try:
            ctx = papermill.make_context("papermill", argv[1:])
        except click.ClickException as exc:
            pytest.fail(f"{line!r} does not parse: {exc.format_message()}")
        assert (ROOT / ctx.params["notebook_path"]).is_file(), ctx.params["notebook_path"]
        assert ctx.params["output_path"].startswith("runs/")  # never over the committed copy
    elif program == "make":
        if shutil.which("make") is None:
            pytest.skip("needs GNU make")
        proc = subprocess.run(
            ["make", "-n", *argv[1:]], cwd=ROOT, env=_make_env(),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, f"{line!r}: {proc.stderr}"
    elif program == "bash" and argv[1:2] == ["benchmarks/gpu_check.sh"]:
        assert set(argv[2:]) <= {"--plan"}, f"{line!r}: gpu_check.sh takes --plan only"
        proc = subprocess.run(  # the plan of the same command: offline, runs nothing
            ["bash", "benchmarks/gpu_check.sh", "--plan"], cwd=ROOT,
            env={**_make_env(), "GPU_CHECK_WORK": "/nonexistent-d2lopt"},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0 and "gpu_check.sh plan" in proc.stdout, proc.stderr
    else:
        pytest.fail(f"{line!r}: unknown program {program!r}; teach this test to parse it")


def _inline_d2lopt_commands() -> list[str]:
    """`d2lopt SUB ...` in inline code (tables, prose); ``[...]`` marks optional parts."""
    spans = re.findall(r"`([^`\n]*\bd2lopt (?:env|train|ladder|tune-loader|ddp)\b[^`\n]*)`", README)
    return sorted({s[s.index("d2lopt ") :] for s in spans})


def test_inline_commands_name_only_real_flags() -> None:
    from d2lopt.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    inline = _inline_d2lopt_commands()
    assert any(c.startswith("d2lopt tune-loader [--dataset") for c in inline), inline
    for text in inline:
        command = text.split()[1]
        known = sub.choices[command]._option_string_actions
        for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", text):
            assert flag in known, f"README shows `{text}`, but d2lopt {command} has no {flag}"
