"""d2lopt: make PyTorch training fast, and prove it by measuring (the course's helper package).

The flat API below is what the notebooks import; each helper's docstring names the notebook
that teaches it. Not re-exported, imported by module name: the apparatus the notebooks run
(``d2lopt.lab``), the torchrun programs (``d2lopt.dist``) and the command line (``d2lopt.cli``).
"""

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

# Loaded on first use (PEP 562): `import d2lopt` and `d2lopt --help` stay fast, since most
# of these modules import PyTorch; `from d2lopt import fit` works exactly as before.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "checkpoint": ("load_checkpoint", "save_checkpoint"),
    "compare": ("Comparison", "compare", "compare_many"),
    "config": ("TrainConfig",),
    "data": (
        "FASHION_MNIST_CLASSES",
        "EpochRandomSampler",
        "fashion_mnist",
        "image_folder",
        "load_fashion_mnist",
        "seed_worker",
        "synthetic_fashion_mnist",
        "write_image_folder",
    ),
    "devices": ("resolve_device", "supports_bf16", "synchronize", "try_all_gpus", "try_gpu"),
    "metrics": (
        "Accumulator",
        "DeviceAccumulator",
        "evaluate",
        "evaluate_accuracy",
        "evaluate_loss",
    ),
    "memory": ("measure_memory", "peak_memory", "worker_memory"),
    "models": ("cnn", "count_parameters", "init_weights", "mlp"),
    "precision": ("autocast_ctx", "grad_scaler"),
    "timing": ("BenchResult", "Timer", "benchmark", "count_host_syncs"),
    "train": ("TrainingInterrupted", "fit", "make_loader"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

if TYPE_CHECKING:  # what static tools and IDEs see
    from .checkpoint import load_checkpoint, save_checkpoint  # noqa: F401
    from .compare import Comparison, compare, compare_many  # noqa: F401
    from .config import TrainConfig  # noqa: F401
    from .data import (  # noqa: F401
        FASHION_MNIST_CLASSES,
        EpochRandomSampler,
        fashion_mnist,
        image_folder,
        load_fashion_mnist,
        seed_worker,
        synthetic_fashion_mnist,
        write_image_folder,
    )
    from .devices import (  # noqa: F401
        resolve_device,
        supports_bf16,
        synchronize,
        try_all_gpus,
        try_gpu,
    )
    from .memory import measure_memory, peak_memory, worker_memory  # noqa: F401
    from .metrics import (  # noqa: F401
        Accumulator,
        DeviceAccumulator,
        evaluate,
        evaluate_accuracy,
        evaluate_loss,
    )
    from .models import cnn, count_parameters, init_weights, mlp  # noqa: F401
    from .precision import autocast_ctx, grad_scaler  # noqa: F401
    from .timing import BenchResult, Timer, benchmark, count_host_syncs  # noqa: F401
    from .train import TrainingInterrupted, fit, make_loader  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        if importlib.util.find_spec(f"{__name__}.{name}") is not None:
            # a submodule (d2lopt.data, d2lopt.train...): `import d2lopt` used to load most
            # of them, so code that reaches them as attributes keeps working
            return importlib.import_module(f".{name}", __name__)
        raise AttributeError(f"module 'd2lopt' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    """The API and the submodules loaded so far: not this file's own imports (``sys``...)."""
    loaded = [
        name
        for name, value in globals().items()
        if isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}"
    ]
    return sorted({*__all__, *loaded, "__version__"})


class _Package(types.ModuleType):
    """Keeps ``d2lopt.compare`` the function when the submodule of that name is imported.

    Importing ``d2lopt.compare`` (the module) sets the package attribute ``compare`` to it;
    the eager ``from .compare import compare`` used to rebind it to the function.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            if name in _MODULE_OF:
                value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__version__ = "0.1.0"

__all__ = [
    "Accumulator",
    "BenchResult",
    "Comparison",
    "DeviceAccumulator",
    "EpochRandomSampler",
    "FASHION_MNIST_CLASSES",
    "Timer",
    "TrainConfig",
    "TrainingInterrupted",
    "autocast_ctx",
    "benchmark",
    "cnn",
    "compare",
    "compare_many",
    "count_host_syncs",
    "count_parameters",
    "evaluate",
    "evaluate_accuracy",
    "evaluate_loss",
    "fashion_mnist",
    "fit",
    "grad_scaler",
    "image_folder",
    "init_weights",
    "load_checkpoint",
    "load_fashion_mnist",
    "make_loader",
    "measure_memory",
    "mlp",
    "peak_memory",
    "resolve_device",
    "save_checkpoint",
    "seed_worker",
    "supports_bf16",
    "synchronize",
    "synthetic_fashion_mnist",
    "try_all_gpus",
    "try_gpu",
    "worker_memory",
    "write_image_folder",
]
