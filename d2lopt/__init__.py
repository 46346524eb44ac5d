"""d2lopt: make PyTorch training fast, and prove it by measuring (the course's helper package).

The flat API below is what the notebooks import; each helper's docstring names the notebook
that teaches it.
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .compare import Comparison, compare, compare_many
from .config import TrainConfig
from .data import (
    FASHION_MNIST_CLASSES,
    EpochRandomSampler,
    fashion_mnist,
    image_folder,
    load_fashion_mnist,
    seed_worker,
    synthetic_fashion_mnist,
    write_image_folder,
)
from .devices import resolve_device, supports_bf16, synchronize, try_all_gpus, try_gpu
from .metrics import Accumulator, DeviceAccumulator, evaluate, evaluate_accuracy, evaluate_loss
from .models import cnn, count_parameters, init_weights, mlp
from .precision import autocast_ctx, grad_scaler
from .timing import BenchResult, Timer, benchmark, count_host_syncs
from .train import TrainingInterrupted, fit, make_loader

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
    "mlp",
    "resolve_device",
    "save_checkpoint",
    "seed_worker",
    "supports_bf16",
    "synchronize",
    "synthetic_fashion_mnist",
    "try_all_gpus",
    "try_gpu",
    "write_image_folder",
]
