"""The experiment of ``13_beyond_data_parallelism``: one torchrun program, three strategies.

    torchrun --standalone --nproc-per-node 2 -m d2lopt.parallelism --json runs/13/two.json

Every rank builds the course CNN from the same seed three ways: **DDP** (the whole model on
every rank), **FSDP** (``fully_shard``: 1/N of every tensor) and a **pipeline** (stage r of
N, :mod:`d2lopt.dist.pipeline`). On the same seeded batch it then measures

1. ``bytes``: this rank's parameter, gradient and optimizer-state bytes after one step of
   each strategy (exact counts, from the tensors);
2. ``check``: the pipeline's per-micro-batch losses and its gradients against the unsplit
   model run on the same micro-batches (largest absolute difference);
3. ``timing``: ``--rounds`` rounds, each running one step of every variant in a rotating
   order with every rank in lockstep (a barrier before each step), plus, per pipeline
   variant, this stage's compute alone (its forwards and backwards without communication),
   so rank 0 can tell a stage's idle share from the same rounds.

Rank 0 writes one JSON file; the notebook turns it into tables, intervals and verdicts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from ..devices import synchronize
from ..distributed import exit_rank, free_port, setup, teardown, torchrun_command, torchrun_env
from ..models import cnn, init_weights
from ..sharding import shard_model
from ..stats import round_order
from .pipeline import SCHEDULES, build_schedule, split_stages

__all__ = ["StateBytes", "launch", "main", "run", "state_bytes"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m d2lopt.parallelism",
        description="DDP vs FSDP vs a pipeline of the course CNN: bytes per rank, the "
        "pipeline's correctness and step times; launch with torchrun.",
    )
    p.add_argument("--json", required=True, help="rank 0 writes the results here")
    p.add_argument("--batch-size", type=int, default=64, help="global batch (default: 64)")
    p.add_argument("--microbatches", type=int, nargs="+", default=[1, 2, 4, 8],
                   help="pipeline micro-batch counts to run (default: 1 2 4 8)")  # fmt: skip
    p.add_argument("--schedules", nargs="+", choices=SCHEDULES, default=list(SCHEDULES))
    p.add_argument("--rounds", type=int, default=8, help="timed rounds (default: 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    return p


def _check_args(args: argparse.Namespace, world: int) -> None:
    if args.batch_size < world or args.batch_size % world:
        raise SystemExit(f"--batch-size: must be a multiple of the {world} ranks")
    for m in args.microbatches:
        if m < 1 or args.batch_size % m:
            raise SystemExit(f"--microbatches: {m} does not divide --batch-size {args.batch_size}")
    if args.rounds < 0:
        raise SystemExit("--rounds: must be >= 0")


class _Lab:
    """One rank's three models, their optimizers and the step of each variant."""

    def __init__(self, args: argparse.Namespace, rank: int, world: int, device: torch.device):
        self.rank, self.world, self.device, self.seed = rank, world, device, args.seed
        g = torch.Generator().manual_seed(args.seed)  # the same samples on every rank
        self.X = torch.randn(args.batch_size, 1, 28, 28, generator=g).to(device)
        self.y = torch.randint(0, 10, (args.batch_size,), generator=g).to(device)
        self.Xr, self.yr = self.X.chunk(world)[rank], self.y.chunk(world)[rank]  # this shard
        self.criterion = nn.CrossEntropyLoss()
        ids = [device.index] if device.type == "cuda" else None
        self.ddp = DDP(self.fresh(), device_ids=ids)
        self.fsdp = shard_model(self.fresh(), device)
        self.stage = split_stages(self.fresh(), world)[rank]
        self.opt = {name: self.sgd(m) for name, m in
                    (("ddp", self.ddp), ("fsdp", self.fsdp), ("pipeline", self.stage))}  # fmt: skip
        self.schedules: dict[tuple[str, int], Any] = {}

    def fresh(self) -> nn.Sequential:
        torch.manual_seed(self.seed)  # identical initial weights on every rank
        net = cnn()
        net.apply(init_weights)
        return net.to(self.device)

    @staticmethod
    def sgd(model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def data_parallel_step(self, name: str) -> None:
        model, opt = (self.ddp if name == "ddp" else self.fsdp), self.opt[name]
        opt.zero_grad(set_to_none=True)
        self.criterion(model(self.Xr), self.yr).backward()  # gradients averaged over ranks
        opt.step()

    def pipeline_step(self, schedule: str, m: int, losses: list | None = None) -> None:
        key = (schedule, m)
        if key not in self.schedules:
            self.schedules[key] = build_schedule(
                self.stage, self.rank, self.world, self.device, schedule, m, self.criterion
            )
        sched, first, last = self.schedules[key], self.rank == 0, self.rank == self.world - 1
        self.opt["pipeline"].zero_grad(set_to_none=True)
        args = (self.X,) if first else ()
        kwargs = {"target": self.y, "losses": losses if losses is not None else []} if last else {}
        sched.step(*args, **kwargs)
        self.opt["pipeline"].step()

    def stage_inputs(self) -> torch.Tensor:
        """This stage's input for the whole batch: the earlier stages run locally, once."""
        with torch.no_grad():
            prefix = split_stages(self.fresh(), self.world)[: self.rank]
            x = self.X
            for s in prefix:
                x = s(x)
        return x

    def compute_only(self, inputs: torch.Tensor, m: int) -> None:
        """This stage's forwards and backwards for ``m`` micro-batches, no communication."""
        for i, x in enumerate(inputs.chunk(m)):
            out = self.stage(x.requires_grad_(self.rank > 0))
            if self.rank == self.world - 1:
                self.criterion(out, self.y.chunk(m)[i]).backward()
            else:
                out.backward(torch.ones_like(out))
        self.stage.zero_grad(set_to_none=True)


@dataclass(frozen=True)
class StateBytes:
    """Bytes of training state this rank holds: exact, from the tensors themselves."""

    params: int
    grads: int
    optimizer: int

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer

    def to_dict(self) -> dict[str, int]:
        return asdict(self) | {"total": self.total}


def _local_bytes(t: Any) -> int:
    if not isinstance(t, torch.Tensor):
        return 0
    local = t.to_local() if hasattr(t, "to_local") else t  # a DTensor: this rank's shard
    return local.numel() * local.element_size()


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> StateBytes:
    """Parameter, gradient and optimizer-state bytes held by *this* rank.

    With DDP each rank reports the whole model; with FSDP about 1/N of it; with a pipeline
    only its stage. Call it after a step and before ``zero_grad`` to count gradients.
    """
    params = list(model.parameters())
    optim = 0
    if optimizer is not None:
        for state in optimizer.state.values():
            optim += sum(_local_bytes(v) for v in state.values())
    return StateBytes(
        params=sum(_local_bytes(p) for p in params),
        grads=sum(_local_bytes(p.grad) for p in params if p.grad is not None),
        optimizer=optim,
    )


def _gather(obj: Any) -> list[Any]:
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _bytes(lab: _Lab, schedules: Sequence[str]) -> dict[str, list[dict[str, int]]]:
    lab.data_parallel_step("ddp")
    lab.data_parallel_step("fsdp")
    lab.pipeline_step(schedules[0], 1)
    mine = {
        "ddp": state_bytes(lab.ddp, lab.opt["ddp"]).to_dict(),
        "fsdp": state_bytes(lab.fsdp, lab.opt["fsdp"]).to_dict(),
        "pipeline": state_bytes(lab.stage, lab.opt["pipeline"]).to_dict(),
    }
    ranks = _gather(mine)
    return {name: [r[name] for r in ranks] for name in mine}


def _check(args: argparse.Namespace, rank: int, world: int, device: torch.device) -> dict:
    """One pipeline step from fresh weights vs the unsplit model on the same micro-batches."""
    out: dict[str, Any] = {}
    for schedule in args.schedules:
        m = max(args.microbatches)
        lab = _Lab(args, rank, world, device)
        losses: list[torch.Tensor] = []
        lab.pipeline_step(schedule, m, losses)  # .step() ran too: compare grads before that
        grads = [p.grad.detach().cpu() for p in lab.stage.parameters()]
        ranks = _gather({"grads": grads, "losses": [float(v.detach()) for v in losses]})
        if rank != 0:
            continue
        net = lab.fresh()
        ref_losses = [lab.criterion(net(x), y) for x, y in zip(lab.X.chunk(m), lab.y.chunk(m),
                                                                    strict=True)]  # fmt: skip
        torch.stack(ref_losses).mean().backward()  # the schedule averages over micro-batches
        ref = [p.grad.detach().cpu() for p in net.parameters()]
        got = [g for r in ranks for g in r["grads"]]
        out[schedule] = {
            "microbatches": m,
            "loss_diff": max(
                abs(a - b.item()) for a, b in zip(ranks[-1]["losses"], ref_losses, strict=True)
            ),  # fmt: skip
            "grad_diff": max((a - b).abs().max().item() for a, b in zip(got, ref, strict=True)),
            "tensors": len(got),
        }
    return out


def _timed(step: Callable[[], None], device: torch.device) -> float:
    dist.barrier()  # every rank starts the step together
    start = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - start


def _timing(lab: _Lab, args: argparse.Namespace) -> dict[str, Any]:
    variants: dict[str, Callable[[], None]] = {
        "ddp": lambda: lab.data_parallel_step("ddp"),
        "fsdp": lambda: lab.data_parallel_step("fsdp"),
    }
    for s in args.schedules:
        for m in args.microbatches:
            if s == "1f1b" and m < lab.world:
                continue  # 1F1B needs at least one micro-batch per stage
            variants[f"{s} m={m}"] = lambda s=s, m=m: lab.pipeline_step(s, m)
    inputs = lab.stage_inputs()
    compute = {f"m={m}": (lambda m=m: lab.compute_only(inputs, m)) for m in args.microbatches}
    for fn in (*variants.values(), *compute.values()):  # warm-up: allocators, lazy init
        _timed(fn, lab.device)
    mine: dict[str, list[float]] = {name: [] for name in (*variants, *compute)}
    names = list(variants)
    for r in range(args.rounds):
        for name in round_order(names, r):  # the same order on every rank: lockstep
            mine[name].append(_timed(variants[name], lab.device))
        for name, fn in compute.items():
            mine[name].append(_timed(fn, lab.device))
    ranks = _gather(mine)
    return {
        "rounds": args.rounds,
        "step": {
            n: [max(vals) for vals in zip(*(r[n] for r in ranks), strict=True)] for n in variants
        },  # fmt: skip  # a step lasts until its slowest rank
        "per_rank": {n: [r[n] for r in ranks] for n in (*variants, *compute)},
    }


def launch(
    module: str, argv: Sequence[str], nproc: int, *, timeout_s: float = 600
) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node nproc -m module argv`` on this machine, from a notebook.

    The ranks are separate processes (nothing is pickled from the kernel), one CPU thread
    each unless ``OMP_NUM_THREADS`` says otherwise (the ranks share the cores). A failed
    launch raises with the tail of its stderr, so a notebook cell fails loudly.
    """
    cmd = torchrun_command(
        module, list(argv), nproc_per_node=nproc,
        rdzv_endpoint=f"127.0.0.1:{free_port()}", extra=["--local-addr", "127.0.0.1"],
    )  # fmt: skip
    env = torchrun_env()
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{module} on {nproc} rank(s) failed:\n{proc.stderr[-3000:]}")
    return proc


def run(
    nproc: int,
    json_path: str | Path,
    *,
    rounds: int = 8,
    batch_size: int = 64,
    microbatches: Sequence[int] = (1, 2, 4, 8),
    device: str = "auto",
    timeout_s: float = 600,
) -> dict[str, Any]:
    """Run this experiment on ``nproc`` local ranks; return the JSON rank 0 wrote.

    Read back from the file, not from the ranks' interleaved prints.
    """
    argv = ["--json", str(json_path), "--rounds", str(rounds), "--batch-size", str(batch_size),
            "--device", device, "--microbatches", *map(str, microbatches)]  # fmt: skip
    launch("d2lopt.parallelism", argv, nproc, timeout_s=timeout_s)
    return json.loads(Path(json_path).read_text())


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    env = setup(args.device)
    if not env.distributed:
        raise SystemExit("d2lopt.parallelism: launch with torchrun (--nproc-per-node 1 works)")
    _check_args(args, env.world_size)
    try:
        lab = _Lab(args, env.rank, env.world_size, env.device)
        result = {
            "world_size": env.world_size,
            "model": "cnn",
            "batch_size": args.batch_size,
            "stage_layers": [len(s) for s in split_stages(lab.fresh(), env.world_size)],
            "bytes": _bytes(lab, args.schedules),
            "check": _check(args, env.rank, env.world_size, env.device),
            "timing": _timing(lab, args),
        }
        if env.is_main:
            path = Path(args.json)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=1))
    finally:
        teardown()
    return 0


if __name__ == "__main__":
    exit_rank(main())  # not sys.exit: see exit_rank
