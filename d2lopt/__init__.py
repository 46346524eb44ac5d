"""d2lopt: make PyTorch training fast, and prove it by measuring (the course's helper package).

The names below are what the notebooks import (``from d2lopt import fit``); each one's
docstring names the notebook that teaches it. Imported by module name instead: the
apparatus the notebooks run (``d2lopt.lab``), the torchrun programs (``d2lopt.dist``) and
the command line (``d2lopt.cli``).
"""

__version__ = "0.1.0"

# Each name, by the module that defines it. Most of these modules import PyTorch, so a name
# is loaded on first use (PEP 562, ``__getattr__`` below): ``import d2lopt`` and
# ``d2lopt --help`` stay fast.
_EXPORTS = {
    "checkpoint": ("load_checkpoint", "save_checkpoint"),
    "config": ("TrainConfig",),
    "data": ("FASHION_MNIST_CLASSES", "EpochRandomSampler", "fashion_mnist", "image_folder",
             "load_fashion_mnist", "seed_worker", "synthetic_fashion_mnist",
             "write_image_folder"),
    "devices": ("resolve_device", "supports_bf16", "synchronize", "try_all_gpus", "try_gpu"),
    "measure": ("Comparison", "compare", "compare_many"),
    "memory": ("measure_memory", "peak_memory", "worker_memory"),
    "metrics": ("Accumulator", "DeviceAccumulator", "evaluate", "evaluate_accuracy",
                "evaluate_loss"),
    "models": ("cnn", "count_parameters", "init_weights", "mlp"),
    "precision": ("autocast_ctx", "grad_scaler"),
    "timing": ("Timer", "count_host_syncs"),
    "train": ("TrainingInterrupted", "fit", "make_loader"),
}  # fmt: skip
__all__ = sorted(name for names in _EXPORTS.values() for name in names)


def __getattr__(name: str):
    for module, names in _EXPORTS.items():
        if name in names:
            import importlib

            value = getattr(importlib.import_module(f".{module}", __name__), name)
            globals()[name] = value  # later look-ups skip this function
            return value
    raise AttributeError(f"module 'd2lopt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
