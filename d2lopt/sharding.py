"""Sharded data parallelism with FSDP2: each rank keeps 1/N of the training state.

Taught in ``13_beyond_data_parallelism``; used by the DDP program's ``--strategy fsdp``.
With DDP every rank holds the whole model, its gradients and its optimizer state: memory
per rank does not shrink as ranks are added. ``fully_shard`` (FSDP2) splits every parameter
across the ranks as a ``DTensor``; a layer's full weights exist only for the moment it runs
(all-gathered before, freed after), and gradients are reduce-scattered, so each rank keeps
and updates only its own shard. The same program runs on CPUs with gloo and on GPUs with
NCCL.

Checkpoints of a sharded model are sharded too (``torch.distributed.checkpoint``, DCP):
every rank writes its shard, and loading reshards them to the current world size, so a job
saved by 2 ranks resumes on 1 or 4.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: the command line reads STRATEGIES without PyTorch
    import torch
    from torch import nn

__all__ = [
    "STRATEGIES",
    "full_state_dict",
    "gradient_sync",
    "load_sharded",
    "save_sharded",
    "shard_model",
]

STRATEGIES = ("ddp", "fsdp")  # the one definition: Replicas, the DDP program's --strategy


def shard_model(net: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """Shard ``net`` in place with ``fully_shard``: each layer with weights, then the whole.

    Per-layer units are what lets FSDP free one layer's gathered weights before the next
    layer runs; the outer call covers what is left (none here) and drives the schedule.
    Needs an initialized process group (torchrun).

    The mesh is built for the device the ranks train on (``device``, else the device of
    ``net``'s parameters), never left to ``fully_shard``'s default: that default
    (``_init_default_mesh`` in pytorch/pytorch ``torch/distributed/fsdp/_fully_shard/
    _fsdp_init.py``) builds the mesh on ``torch._C._get_accelerator()``, i.e. CUDA on any
    machine with a GPU, even over gloo with CPU ranks; ``_get_device_from_mesh`` then moves
    the parameters (and ``FSDPModule``'s root moves the inputs) to ``cuda:current_device()``
    while the labels stay on the CPU. Notebook 13 runs its FSDP ranks on the CPU on a
    one-GPU machine.
    """
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if device is None:
        first = next(net.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    dev = torch.device(device)
    mesh = init_device_mesh(dev.type, (torch.distributed.get_world_size(),))
    for layer in net.children():
        if any(p.requires_grad for p in layer.parameters(recurse=False)):
            fully_shard(layer, mesh=mesh)
    fully_shard(net, mesh=mesh)
    return net


@contextlib.contextmanager
def gradient_sync(model: nn.Module, strategy: str, sync: bool) -> Iterator[None]:
    """Skip the gradient collective on all but the last micro-batch of an accumulation.

    DDP: ``model.no_sync()``. FSDP2: ``set_requires_gradient_sync(False)`` keeps unsharded
    gradients locally until the micro-batch that syncs (it reduce-scatters their sum).
    """
    if sync or strategy not in STRATEGIES:
        yield
    elif strategy == "ddp":
        with model.no_sync():
            yield
    else:
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded ``state_dict`` on rank 0 (CPU tensors; ``{}`` on the other ranks).

    A collective: every rank must call it. The result loads into a plain, unsharded model
    with ``torch.load(..., weights_only=True)``.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def save_sharded(folder: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Every rank writes its shard of model and optimizer state to ``folder`` (DCP).

    A collective. The folder is complete only when this returns on every rank: write a new
    folder each time and point to it afterwards (the DDP program's ``checkpoint.pt`` does).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(folder))


def load_sharded(folder: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load a DCP checkpoint into a sharded model, resharding to this world size."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if not (Path(folder) / ".metadata").exists():
        raise ValueError(f"resume: no complete sharded checkpoint in {folder} (no .metadata)")
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"]
    )
