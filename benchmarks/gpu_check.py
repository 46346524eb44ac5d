"""The Python half of ``benchmarks/gpu_check.sh``: folder name, test list, bandwidth, summary.

Usage (the shell script calls these; each is usable on its own)::

    python3 benchmarks/gpu_check.py slug "NVIDIA H200"          # -> nvidia-h200
    python3 benchmarks/gpu_check.py cuda-tests                  # node ids of CUDA-only tests
    python3 benchmarks/gpu_check.py parameters notebooks/07_cpu_to_gpu.ipynb  # papermill-ready?
    .venv/bin/python benchmarks/gpu_check.py bandwidth --out DIR/bandwidth.json
    python3 benchmarks/gpu_check.py summary DIR                 # summary.json + summary.md
    python3 benchmarks/gpu_check.py wheels --dest .gpu-wheels   # make gpu-wheels (network)
    python3 benchmarks/gpu_check.py wheel-plan .gpu-wheels      # what this Python would install
    python3 benchmarks/gpu_check.py install-wheels .gpu-wheels SITE  # offline, --target SITE

Every sub-command but ``bandwidth`` and ``versions`` uses the standard library only (and
pip, for the wheels), so it runs on any Python, before anything is installed.
``bandwidth`` needs torch with CUDA: it measures the pageable vs pinned host-to-device
copies that ``notebooks/07_cpu_to_gpu.ipynb`` teaches, with
:func:`d2lopt.lab.transfer.copy_bandwidth`.
Nothing here prints a number that a measurement did not produce.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The columns of DIR/steps.tsv, one line per step, appended by gpu_check.sh's run_step.
STEP_FIELDS = ("id", "name", "status", "rc", "seconds", "timeout_s", "log", "note", "command")
STATUSES = ("ok", "failed", "timeout", "skipped")

# PCIe: transfer rate per lane (GT/s) and line-code efficiency, per generation (PCI-SIG).
_PCIE = {
    1: (2.5, 8 / 10),
    2: (5.0, 8 / 10),
    3: (8.0, 128 / 130),
    4: (16.0, 128 / 130),
    5: (32.0, 128 / 130),
    6: (64.0, 242 / 256),  # FLIT mode: 242 payload bytes of 256
}


# ------------------------------------------------------------------------------ slug
def slug(name: str) -> str:
    """A folder-safe name for a device: ``"NVIDIA H200"`` -> ``"nvidia-h200"``.

    Lower case, every run of other characters becomes one ``-``, no leading/trailing ``-``,
    so results of different GPUs land in different ``benchmarks/results/gpu-<slug>/`` folders.

    Example:
        >>> slug("NVIDIA GeForce RTX 4090")
        'nvidia-geforce-rtx-4090'
    """
    if not isinstance(name, str):
        raise TypeError(f"name: expected the device name as a str, got {type(name).__name__}")
    out = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not out:
        raise ValueError(
            f"name: {name!r} has no letters or digits; pass the device name, e.g. "
            "torch.cuda.get_device_name() or nvidia-smi --query-gpu=name"
        )
    return out


# ------------------------------------------------------------------------ cuda-tests
def _is_requires_cuda(node: ast.expr) -> bool:
    """True for ``requires_cuda``, ``conftest.requires_cuda`` or ``requires_cuda(...)``."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Name):
        return node.id == "requires_cuda"
    return isinstance(node, ast.Attribute) and node.attr == "requires_cuda"


def cuda_test_ids(tests_dir: Path | str = "tests", root: Path | str = ROOT) -> list[str]:
    """pytest node ids of the tests marked ``@requires_cuda`` (the skips of a CPU run).

    Read from the source (nothing is imported), so the list is the same on any machine:
    a module with ``pytestmark = requires_cuda`` counts whole; otherwise each decorated
    function or class. Paths are relative to ``root``, as pytest is run from there.
    """
    root = Path(root)
    folder = Path(tests_dir)
    folder = folder if folder.is_absolute() else root / folder
    if not folder.is_dir():
        raise ValueError(f"tests_dir: {folder} is not a folder; pass the test suite's folder")
    ids: list[str] = []
    for path in sorted(folder.rglob("test_*.py")):
        rel = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(), filename=str(path))
        marked_module = any(
            isinstance(stmt, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in stmt.targets)
            and any(_is_requires_cuda(n) for n in ast.walk(stmt.value))
            for stmt in tree.body
        )
        if marked_module:
            ids.append(rel)
            continue
        for stmt in tree.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and any(
                _is_requires_cuda(d) for d in stmt.decorator_list
            ):
                ids.append(f"{rel}::{stmt.name}")
            elif isinstance(stmt, ast.ClassDef):
                ids += [
                    f"{rel}::{stmt.name}::{m.name}"
                    for m in stmt.body
                    if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and any(_is_requires_cuda(d) for d in m.decorator_list)
                ]
    return ids


# ------------------------------------------------------------------------- bandwidth
def pcie_theoretical_gb_per_s(gen: int, width: int) -> float:
    """Theoretical one-direction bandwidth (GB/s, 10^9 bytes) of a PCIe link.

    Example:
        >>> round(pcie_theoretical_gb_per_s(5, 16), 1)
        63.0
    """
    if gen not in _PCIE:
        raise ValueError(f"gen: PCIe generation must be one of {sorted(_PCIE)}, got {gen!r}")
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width: lane count must be an int >= 1, got {width!r}")
    rate, efficiency = _PCIE[gen]
    return rate * efficiency * width / 8


def parse_pcie_query(text: str) -> tuple[int, int] | None:
    """``(gen, width)`` from ``nvidia-smi --query-gpu=pcie.link.gen.max,pcie.link.width.max
    --format=csv,noheader,nounits`` output, or ``None`` when it reports no PCIe link
    (``[N/A]``, ``[Not Supported]``, an error: e.g. a GPU on NVLink-C2C)."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    parts = [p.strip() for p in first.split(",")]
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    gen, width = int(parts[0]), int(parts[1])
    return (gen, width) if gen in _PCIE and width >= 1 else None


def _link_theory(gpu: str) -> dict:
    """The host link's theoretical bandwidth from nvidia-smi, or why it is unknown."""
    cmd = [
        "nvidia-smi",
        "-i",
        gpu,
        "--query-gpu=pcie.link.gen.max,pcie.link.width.max",
        "--format=csv,noheader,nounits",
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
        parsed = parse_pcie_query(done.stdout) if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        parsed = None
    if parsed is None:
        return {
            "theoretical_gb_per_s": None,
            "theoretical_note": "unknown: nvidia-smi reported no PCIe generation/width for "
            "this GPU (the host link may not be PCIe)",
        }
    gen, width = parsed
    return {
        "pcie_gen_max": gen,
        "pcie_width_max": width,
        "theoretical_gb_per_s": round(pcie_theoretical_gb_per_s(gen, width), 2),
        "theoretical_note": f"PCIe gen {gen} x{width}, one direction, before protocol "
        "overhead (the link may run slower; nvidia-smi's maximum for this GPU and host)",
    }


def measure_bandwidth(sizes_mb: list[int], max_seconds: float, device: str = "cuda") -> dict:
    """Pageable vs pinned host-to-device copies of each size, compared with ``d2lopt.compare``.

    Both modes are :func:`d2lopt.lab.transfer.copy_fn` (``x.to(dev)``, blocking, from a pageable
    or a pinned-once tensor: one change between them). ``compare`` times them in paired,
    alternating rounds, so the pinned/pageable ratio comes with its confidence interval; the
    GB/s of each mode is the copy size over its median seconds per copy.
    """
    import torch  # only this sub-command needs torch

    from d2lopt.lab.transfer import copy_fn, cuda_skip_reason
    from d2lopt.measure import compare

    reason = cuda_skip_reason(device)
    if reason:
        raise ValueError(f"--device: {reason}; run it on a machine with an NVIDIA GPU")
    dev = torch.device(device)
    results = []
    for mb in sizes_mb:
        nbytes = mb << 20
        r = compare(
            copy_fn(nbytes, mode="pageable", device=dev),
            copy_fn(nbytes, mode="pinned", device=dev),
            device=dev,
            max_seconds=max_seconds,
            label=f"pinned vs pageable, {mb} MiB",
        )
        results.append(
            {
                "size_mb": mb,
                "pageable_gb_per_s": round(nbytes / r.baseline_median / 1e9, 2),
                "pinned_gb_per_s": round(nbytes / r.candidate_median / 1e9, 2),
                "pinned_over_pageable": round(r.speedup, 2),
                "ci": None if math.isnan(r.ci[0]) else [round(x, 2) for x in r.ci],
                "rounds": r.rounds,
                "verdict": r.verdict,
                "reason": r.reason,
            }
        )
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    bus = getattr(props, "pci_bus_id", None)
    if bus is not None:  # address the same GPU in nvidia-smi even if the numbering differs
        gpu = f"{props.pci_domain_id:08X}:{bus:02X}:{props.pci_device_id:02X}.0"
    else:
        gpu = str(index)
    return {
        "device": torch.cuda.get_device_name(index),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "method": "d2lopt.compare of d2lopt.lab.transfer.copy_fn modes 'pageable' (baseline) and "
        "'pinned' (candidate): float32 tensor, blocking x.to(device), device synchronized "
        f"around each timed block, at most {max_seconds:g} s per size",
        "sizes": results,
        "link": _link_theory(gpu),
    }


def bandwidth_markdown(result: dict) -> str:
    """The bandwidth table of ``summary.md`` (and of the step's log)."""
    lines = [
        "| size | pageable GB/s | pinned GB/s | pinned / pageable [95 % CI], rounds | verdict |",
        "|---:|---:|---:|---:|---|",
    ]
    for row in result["sizes"]:
        ci = "[no interval]" if row["ci"] is None else "[{:.2f}, {:.2f}]".format(*row["ci"])
        lines.append(
            f"| {row['size_mb']} MiB | {row['pageable_gb_per_s']:.2f} | "
            f"{row['pinned_gb_per_s']:.2f} | {row['pinned_over_pageable']:.2f}x {ci}, "
            f"{row['rounds']} | {row['verdict']} |"
        )
    link = result.get("link", {})
    theory = link.get("theoretical_gb_per_s")
    note = link.get("theoretical_note", "unknown")
    lines.append("")
    lines.append(
        f"Link theoretical bandwidth: {theory:.1f} GB/s ({note})."
        if theory is not None
        else f"Link theoretical bandwidth: {note}."
    )
    return "\n".join(lines)


# ------------------------------------------------------------------------ parameters
def parameters_cells(notebook: Path | str) -> int:
    """How many cells of ``notebook`` carry papermill's ``parameters`` tag.

    ``papermill -p SIZE gpu`` on a notebook without that cell inserts ``SIZE = "gpu"`` at the
    top, and the notebook's own ``SIZE = "ci"`` below it wins: a silent CI-sized run
    presented as a GPU-sized one. The script checks for exactly one before running.
    """
    path = Path(notebook)
    if not path.is_file():
        raise ValueError(f"notebook: {path} is not a file; pass a notebooks/NN_name.ipynb path")
    cells = json.loads(path.read_text())["cells"]
    return sum("parameters" in c.get("metadata", {}).get("tags", []) for c in cells)


# ---------------------------------------------------------------------------- wheels
WHEELS_FILE = ROOT / "benchmarks" / "gpu_wheels.txt"
WHEELS_LIMIT_MB = 50  # the folder travels with the checkout to the GPU box: keep it small
# pip matches each manylinux tag exactly: the glibc levels common wheels are built for
# (the image's glibc must be at least the highest one chosen; 2.28 is RHEL 8 / Ubuntu 20.04)
PLATFORMS = tuple(f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28)) + (
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


def wheel_requirements(path: Path | str = WHEELS_FILE) -> list[str]:
    """The pinned ``name==version`` lines of ``benchmarks/gpu_wheels.txt`` (comments dropped)."""
    reqs = []
    for raw in Path(path).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!-]+", line):
            raise ValueError(f"{path}: expected name==version, got {raw!r}")
        reqs.append(line)
    return reqs


def download_command(
    reqs: list[str], dest: str, python_version: str = "3.12", platforms=PLATFORMS
) -> list[str]:
    """The ``pip download`` of ``reqs`` for a CPython ``python_version`` on Linux x86-64.

    ``--no-deps``: the list is complete on purpose (what the image lacks); ``--only-binary``:
    wheels only, nothing to build on the offline box.
    """
    if not re.fullmatch(r"3\.\d+", python_version):
        raise ValueError(f"--python-version: expected e.g. 3.12, got {python_version!r}")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--python-version", python_version, "--implementation", "cp"]  # fmt: skip
    for plat in platforms:
        cmd += ["--platform", plat]
    return [*cmd, "--dest", dest, *reqs]


def folder_mb(folder: Path | str) -> float:
    return sum(p.stat().st_size for p in Path(folder).glob("*.whl")) / 2**20


def wheel_dist(filename: str) -> tuple[str, str]:
    """``(normalized name, version)`` of a wheel file name (PEP 427 / PEP 503)."""
    parts = Path(filename).name.removesuffix(".whl").split("-")
    if len(parts) not in (5, 6):
        raise ValueError(f"wheels: {filename!r} is not a wheel file name")
    return re.sub(r"[-_.]+", "-", parts[0]).lower(), parts[1]


def installed_version(name: str) -> str | None:
    """The version of distribution ``name`` this interpreter can import, or ``None``."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def wheel_plan(folder: Path | str) -> list[dict]:
    """For each wheel in ``folder``: install it, or skip it because this Python has it.

    Run by the GPU image's Python: a distribution it already has (any version) is left to
    it, so the wheels never shadow the image's packages (torch is never among them).
    """
    rows = []
    for path in sorted(Path(folder).glob("*.whl")):
        name, version = wheel_dist(path.name)
        have = installed_version(name)
        rows.append({"file": path.name, "name": name, "version": version, "have": have})
    return rows


def install_wheels(folder: Path | str, target: Path | str) -> list[dict]:
    """Install the wheels this Python lacks into ``target`` (offline: ``--no-index``)."""
    rows = wheel_plan(folder)
    todo = [str(Path(folder) / r["file"]) for r in rows if r["have"] is None]
    if todo:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
               "--no-compile", "--no-cache-dir", "--upgrade", "--target", str(target),
               *todo]  # fmt: skip
        subprocess.run(cmd, check=True)
    return rows


def plan_lines(rows: list[dict]) -> list[str]:
    return [
        f"install {r['name']} {r['version']} ({r['file']})"
        if r["have"] is None
        else f"skip    {r['name']} {r['version']}: this Python has {r['have']}"
        for r in rows
    ]


def missing_modules(modules: list[str]) -> list[str]:
    """The modules of ``modules`` this interpreter cannot import (found, not imported)."""
    import importlib.util

    return [m for m in modules if importlib.util.find_spec(m) is None]


# --------------------------------------------------------------------------- summary
def read_steps(path: Path) -> list[dict]:
    """The rows of ``steps.tsv`` as dicts (``rc`` and ``seconds`` as numbers)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        values = line.split("\t")
        if len(values) != len(STEP_FIELDS):
            raise ValueError(f"{path}: expected {len(STEP_FIELDS)} tab-separated fields: {line!r}")
        row = dict(zip(STEP_FIELDS, values, strict=True))
        if row["status"] not in STATUSES:
            raise ValueError(f"{path}: unknown status {row['status']!r} in {line!r}")
        row["rc"] = int(row["rc"]) if row["rc"] not in ("", "-") else None
        row["seconds"] = int(row["seconds"])
        row["timeout_s"] = int(row["timeout_s"])
        rows.append(row)
    return rows


def junit_counts(path: Path) -> dict | None:
    """``tests/failures/errors/skipped`` of a pytest junit xml, or ``None`` if absent."""
    if not Path(path).is_file():
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    keys = ("tests", "failures", "errors", "skipped")
    return {k: sum(int(s.get(k, 0)) for s in suites) for k in keys}


def write_summary(out_dir: Path | str) -> dict:
    """Write ``summary.json`` and ``summary.md`` into ``out_dir`` from what the steps left.

    Every number comes from a file a step wrote (``steps.tsv``, ``tests/junit.xml``,
    ``bandwidth.json``, ``env/*``, the DDP log); a missing file is reported as missing.
    """
    out = Path(out_dir)
    steps = read_steps(out / "steps.tsv") if (out / "steps.tsv").is_file() else []
    meta_path = out / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    summary: dict = {**meta, "steps": steps}
    summary["all_ok"] = bool(steps) and all(s["status"] == "ok" for s in steps)
    summary["tests"] = junit_counts(out / "tests" / "junit.xml")
    bw_path = out / "bandwidth.json"
    summary["bandwidth"] = json.loads(bw_path.read_text()) if bw_path.is_file() else None
    ddp_logs = sorted((out / "logs").glob("*ddp*.log")) if (out / "logs").is_dir() else []
    ddp_text = "".join(p.read_text(errors="replace") for p in ddp_logs)
    summary["ddp_backend_nccl_seen"] = "backend=nccl" in ddp_text if ddp_logs else None
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    md = [f"# GPU check: {meta.get('device', 'unknown device')}", ""]
    for key in ("started", "finished", "git_commit", "deadline_s", "elapsed_s", "note"):
        if key in meta:
            md.append(f"- {key.replace('_', ' ')}: {meta[key]}")
    md += ["", "| step | status | exit code | seconds | timeout (s) | log | note |"]
    md.append("|---|---|---:|---:|---:|---|---|")
    for s in steps:
        rc = "" if s["rc"] is None else s["rc"]
        md.append(
            f"| {s['id']} {s['name']} | {s['status']} | {rc} | {s['seconds']} | "
            f"{s['timeout_s']} | {s['log']} | {s['note']} |"
        )
    md.append("")
    t = summary["tests"]
    md.append(
        "CUDA-only tests: "
        + (
            f"{t['tests']} run, {t['failures']} failed, {t['errors']} errors, "
            f"{t['skipped']} skipped (tests/junit.xml)."
            if t
            else "no junit xml (the step did not run or did not finish)."
        )
    )
    if summary["ddp_backend_nccl_seen"] is not None:
        seen = "yes" if summary["ddp_backend_nccl_seen"] else "no"
        md.append(f"DDP run: `backend=nccl` in its log: {seen}.")
    if summary["bandwidth"]:
        md += ["", "## Host-to-device bandwidth", "", bandwidth_markdown(summary["bandwidth"])]
    (out / "summary.md").write_text("\n".join(md) + "\n")
    return summary


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("slug", help="folder-safe name of a device name")
    p.add_argument("name")
    p = sub.add_parser("cuda-tests", help="node ids of the @requires_cuda tests")
    p.add_argument("--tests-dir", default="tests")
    sub.add_parser("versions", help="torch, CUDA, cuDNN, NCCL versions and the GPU's name")
    p = sub.add_parser("parameters", help="exit 1 unless the notebook has a parameters cell")
    p.add_argument("notebook")
    p = sub.add_parser("bandwidth", help="pageable vs pinned host-to-device copies")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--sizes-mb", type=int, nargs="+", default=[16, 256])
    p.add_argument("--max-seconds", type=float, default=8.0, help="time budget per size")
    p.add_argument("--device", default="cuda")
    p = sub.add_parser("summary", help="write summary.json and summary.md")
    p.add_argument("dir")
    p = sub.add_parser("wheels", help="download benchmarks/gpu_wheels.txt (make gpu-wheels)")
    p.add_argument("--dest", default=".gpu-wheels")
    p.add_argument("--python-version", default="3.12", help="the GPU image's Python")
    p.add_argument("--plan", action="store_true", help="print the pip command, run nothing")
    p = sub.add_parser("wheel-plan", help="which wheels this Python would install")
    p.add_argument("folder")
    p = sub.add_parser("install-wheels", help="install the wheels this Python lacks, offline")
    p.add_argument("folder")
    p.add_argument("target")
    p = sub.add_parser("missing", help="print the modules this Python cannot import")
    p.add_argument("modules", nargs="+")
    args = parser.parse_args(argv)
    name = f"gpu_check.py {args.command}"
    try:
        if args.command == "slug":
            print(slug(args.name))
        elif args.command == "cuda-tests":
            ids = cuda_test_ids(args.tests_dir)
            if not ids:
                print(f"{name}: no @requires_cuda tests under {args.tests_dir}", file=sys.stderr)
                return 1
            print("\n".join(ids))
        elif args.command == "versions":
            import torch

            print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
                  f"{torch.backends.cudnn.version()}, NCCL {torch.cuda.nccl.version()}, "
                  f"GPU {torch.cuda.get_device_name(0)}")  # fmt: skip
        elif args.command == "parameters":
            n = parameters_cells(args.notebook)
            if n != 1:
                print(
                    f"{name}: {args.notebook} has {n} cells tagged parameters, needs exactly "
                    'one (holding SIZE = "ci"); without it papermill -p SIZE gpu would '
                    "silently run the CI size",
                    file=sys.stderr,
                )
                return 1
        elif args.command == "bandwidth":
            if not args.max_seconds > 0:
                raise ValueError(f"--max-seconds: must be > 0, got {args.max_seconds}")
            if any(mb < 1 for mb in args.sizes_mb):
                raise ValueError(f"--sizes-mb: sizes must be >= 1 MiB, got {args.sizes_mb}")
            result = measure_bandwidth(args.sizes_mb, args.max_seconds, args.device)
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
            print(bandwidth_markdown(result))
        elif args.command == "wheels":
            cmd = download_command(wheel_requirements(), args.dest, args.python_version)
            print(" ".join(cmd))
            if args.plan:
                return 0
            Path(args.dest).mkdir(parents=True, exist_ok=True)
            if subprocess.run(cmd).returncode != 0:  # name the ones pip cannot find for it
                reqs = wheel_requirements()
                base = cmd[: len(cmd) - len(reqs)]
                failed = [r for r in reqs if subprocess.run([*base, r]).returncode != 0]
                if failed:
                    print(f"{name}: no wheel for Python {args.python_version} on Linux x86-64: "
                          f"{' '.join(failed)}; change their pins in {WHEELS_FILE.name}",
                          file=sys.stderr)  # fmt: skip
                    return 1
            mb = folder_mb(args.dest)
            if mb > WHEELS_LIMIT_MB:
                print(f"{name}: {args.dest} holds {mb:.1f} MB of wheels, over the "
                      f"{WHEELS_LIMIT_MB} MB limit", file=sys.stderr)  # fmt: skip
                return 1
            print(f"{args.dest}: {len(list(Path(args.dest).glob('*.whl')))} wheels, {mb:.1f} MB; "
                  "copy it to the GPU machine's checkout (bash benchmarks/gpu_check.sh "
                  "installs from it offline)")  # fmt: skip
        elif args.command in ("wheel-plan", "install-wheels"):
            if not Path(args.folder).is_dir():
                print(f"{name}: no wheels folder {args.folder} (make gpu-wheels makes one)")
                return 0
            rows = (
                wheel_plan(args.folder)
                if args.command == "wheel-plan"
                else install_wheels(args.folder, args.target)
            )
            print("\n".join(plan_lines(rows)) or f"{name}: no wheels in {args.folder}")
        elif args.command == "missing":
            missing = missing_modules(args.modules)
            if missing:
                print(" ".join(missing))
                return 1
        else:
            write_summary(args.dir)  # exit code 0: written (all_ok says how the steps went)
            print(Path(args.dir, "summary.md").read_text(), end="")
    except ValueError as err:
        print(f"{name}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
