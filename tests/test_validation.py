"""Bad input to the public API fails at once, naming the parameter and the fix.

One row per bad input: the call, the exception type (``TypeError`` for a wrong kind of
value, ``ValueError`` for a wrong value) and text the message must contain. Cases that need
an absent device skip on machines that have it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import d2lopt.data as data_mod
from d2lopt import (
    Accumulator,
    DeviceAccumulator,
    EpochRandomSampler,
    Timer,
    TrainConfig,
    autocast_ctx,
    cnn,
    count_parameters,
    evaluate,
    evaluate_loss,
    fashion_mnist,
    fit,
    grad_scaler,
    image_folder,
    init_weights,
    load_checkpoint,
    load_fashion_mnist,
    make_loader,
    mlp,
    resolve_device,
    save_checkpoint,
    supports_bf16,
    synchronize,
    synthetic_fashion_mnist,
    try_gpu,
    write_image_folder,
)
from d2lopt.checkpoint import set_rng_state
from d2lopt.data import data_root, image_transform
from d2lopt.devices import accelerator_name, as_device
from d2lopt.lab.bench import measure_loader
from d2lopt.measure import compare, time_repeats
from d2lopt.precision import amp_dtype, check_amp, set_tf32
from d2lopt.verdict import fact

CUDA = torch.cuda.is_available()
MPS = torch.backends.mps.is_available()
no_cuda = pytest.mark.skipif(CUDA, reason="checks the message on a machine without CUDA")
no_mps = pytest.mark.skipif(MPS, reason="checks the message on a machine without Apple MPS")

DATA = TensorDataset(torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,)))
CPU = {"device": "cpu"}


def _case(name, call, error, match, *marks):
    return pytest.param(call, error, match, id=name, marks=marks)


def _unwritable(tmp):
    (tmp / "a-file").write_text("x")
    return tmp / "a-file" / "out"


CASES = [
    # ---- TrainConfig: every field, and the combinations that cannot work
    _case("config-epochs-zero", lambda t: TrainConfig(num_epochs=0), ValueError,
          "TrainConfig.num_epochs: must be >= 1, got 0"),
    _case("config-batch-float", lambda t: TrainConfig(batch_size=2.5), ValueError,
          "TrainConfig.batch_size"),
    _case("config-batch-bool", lambda t: TrainConfig(batch_size=True), ValueError,
          "TrainConfig.batch_size"),
    _case("config-workers-negative", lambda t: TrainConfig(num_workers=-1), ValueError,
          "TrainConfig.num_workers: must be >= 0, got -1"),
    _case("config-workers-thrash", lambda t: TrainConfig(num_workers=100_000), ValueError,
          "would thrash; use at most"),
    _case("config-prefetch-without-workers", lambda t: TrainConfig(prefetch_factor=4),
          ValueError, "prefetch_factor: needs num_workers > 0"),
    _case("config-prefetch-zero", lambda t: TrainConfig(num_workers=1, prefetch_factor=0),
          ValueError, "TrainConfig.prefetch_factor: must be >= 1, got 0"),
    _case("config-persistent-without-workers", lambda t: TrainConfig(persistent_workers=True),
          ValueError, "persistent_workers: needs num_workers > 0"),
    _case("config-switch-not-bool", lambda t: TrainConfig(pin_memory="yes"), ValueError,
          "TrainConfig.pin_memory: must be True or False"),
    _case("config-lr-zero", lambda t: TrainConfig(lr=0), ValueError, "TrainConfig.lr: must be > 0"),
    _case("config-lr-nan", lambda t: TrainConfig(lr=math.nan), ValueError,
          "TrainConfig.lr: must be a finite number"),
    _case("config-lr-string", lambda t: TrainConfig(lr="0.1"), ValueError, "TrainConfig.lr"),
    _case("config-momentum-one", lambda t: TrainConfig(momentum=1.0), ValueError,
          "TrainConfig.momentum: must be < 1, got 1.0"),
    _case("config-eval-every-zero", lambda t: TrainConfig(eval_every=0), ValueError,
          "TrainConfig.eval_every"),
    _case("config-seed-negative", lambda t: TrainConfig(seed=-1), ValueError, "TrainConfig.seed"),
    _case("config-seed-too-big", lambda t: TrainConfig(seed=2**40), ValueError,
          "TrainConfig.seed: must be in [0, 4294967295]"),
    _case("config-device-unknown", lambda t: TrainConfig(device="tpu"), ValueError,
          "TrainConfig.device: unknown device 'tpu'"),
    _case("config-device-type", lambda t: TrainConfig(device=0.5), ValueError,
          "TrainConfig.device: must be a string"),
    _case("config-cuda-absent", lambda t: TrainConfig(device="cuda"), ValueError,
          "TrainConfig.device: 'cuda' requested but CUDA is not available", no_cuda),
    _case("config-mps-absent", lambda t: TrainConfig(device="mps"), ValueError,
          "TrainConfig.device: 'mps' requested but Apple MPS is not available", no_mps),
    _case("config-amp-unknown", lambda t: TrainConfig(amp="int8"), ValueError,
          "TrainConfig.amp: must be one of"),
    # ---- devices
    _case("try-gpu-negative", lambda t: try_gpu(-1), ValueError, "i: must be >= 0, got -1"),
    _case("resolve-unknown", lambda t: resolve_device("gpu"), ValueError,
          "device: unknown device 'gpu'"),
    _case("resolve-cuda-absent", lambda t: resolve_device("cuda:1"), ValueError,
          "CUDA is not available", no_cuda),
    _case("as-device-type", lambda t: as_device(1.5), TypeError, "device: expected a torch.device"),
    _case("synchronize-unknown", lambda t: synchronize("tpu"), ValueError,
          "device: unknown device 'tpu'"),
    _case("synchronize-cuda-absent", lambda t: synchronize("cuda"), ValueError,
          "device: 'cuda' requested but CUDA is not available", no_cuda),
    _case("supports-bf16-cuda-absent", lambda t: supports_bf16("cuda"), ValueError,
          "CUDA is not available", no_cuda),
    _case("accelerator-name-mps-absent", lambda t: accelerator_name("mps"), ValueError,
          "Apple MPS is not available", no_mps),
    # ---- precision
    _case("amp-dtype-unknown", lambda t: amp_dtype("fp8"), ValueError, "amp: must be one of"),
    _case("check-amp-device-string", lambda t: check_amp("gpu", "off"), ValueError,
          "device: unknown device 'gpu'"),
    _case("autocast-unknown-mode", lambda t: autocast_ctx("cpu", "fp8"), ValueError,
          "amp: must be one of"),
    _case("grad-scaler-device-unknown", lambda t: grad_scaler("tpu", "fp16"), ValueError,
          "device: unknown device 'tpu'"),
    _case("set-tf32-not-bool", lambda t: set_tf32("yes"), TypeError,
          "enabled: must be True or False"),
    # ---- data
    _case("data-root-type", lambda t: data_root(42), TypeError, "root: expected a folder path"),
    _case("fashion-source", lambda t: fashion_mnist(source="web"), ValueError,
          "source: must be 'auto', 'real' or 'synthetic'"),
    _case("fashion-train-type", lambda t: fashion_mnist("yes"), TypeError,
          "train: must be True or False"),
    _case("fashion-n-zero", lambda t: fashion_mnist(source="synthetic", n=0), ValueError,
          "n: must be >= 1"),
    _case("fashion-n-bool", lambda t: fashion_mnist(source="synthetic", n=True), TypeError, "n:"),
    _case("synthetic-n-float", lambda t: synthetic_fashion_mnist(2.5), TypeError,
          "n: must be an int >= 1, got 2.5"),
    _case("synthetic-seed-negative", lambda t: synthetic_fashion_mnist(4, seed=-1), ValueError,
          "seed: must be >= 0"),
    _case("load-batch-zero", lambda t: load_fashion_mnist(0), ValueError, "batch_size"),
    _case("load-n-train-zero", lambda t: load_fashion_mnist(32, n_train=0), ValueError,
          "n_train: must be >= 1"),
    _case("load-kwargs-conflict", lambda t: load_fashion_mnist(32, shuffle=True), TypeError,
          "loader_kwargs: shuffle set by load_fashion_mnist"),
    _case("sampler-empty", lambda t: EpochRandomSampler(0), ValueError, "n: must be >= 1"),
    _case("sampler-seed-too-big", lambda t: EpochRandomSampler(4, seed=2**40), ValueError,
          "seed: must be in [0, 4294967295]"),
    _case("sampler-epoch-negative", lambda t: EpochRandomSampler(4).set_epoch(-1), ValueError,
          "epoch: must be >= 0"),
    _case("folder-size-too-small", lambda t: write_image_folder(t, n=4, size=4), ValueError,
          "size: must be >= 8"),
    _case("folder-format", lambda t: write_image_folder(t, n=4, fmt="gif"), ValueError,
          "fmt: must be 'jpeg' or 'png'"),
    _case("folder-root-none", lambda t: write_image_folder(None), TypeError, "root:"),
    _case("folder-source", lambda t: write_image_folder(t, source="web"), ValueError, "source:"),
    _case("image-folder-missing", lambda t: image_folder(t / "missing"), ValueError,
          "create one with d2lopt.write_image_folder"),
    _case("image-transform-size", lambda t: image_transform(size=0), ValueError, "size:"),
    # ---- metrics
    _case("accumulator-zero", lambda t: Accumulator(0), ValueError, "n: must be >= 1, got 0"),
    _case("accumulator-arity", lambda t: Accumulator(2).add(1.0), ValueError, "expected 2 values"),
    _case("accumulator-value", lambda t: Accumulator(1).add("x"), TypeError,
          "Accumulator.add: values must be numbers"),
    _case("device-acc-cuda-absent", lambda t: DeviceAccumulator(2, "cuda"), ValueError,
          "CUDA is not available", no_cuda),
    _case("device-acc-many-elements", lambda t: DeviceAccumulator(1).add(torch.ones(3)),
          TypeError, "pass one-element tensors (e.g. loss.sum())"),
    _case("device-acc-value", lambda t: DeviceAccumulator(1).add("x"), TypeError,
          "must be a tensor or a number"),
    _case("device-acc-state", lambda t: DeviceAccumulator(2).load_state([1.0]), ValueError,
          "expected 2 values"),
    _case("evaluate-net-type", lambda t: evaluate("net", []), TypeError, "net: expected"),
    _case("evaluate-data-type", lambda t: evaluate(mlp(), 5), TypeError, "data_iter: expected"),
    _case("evaluate-batch-shape", lambda t: evaluate(mlp(), [(torch.ones(2, 784),)]), TypeError,
          "data_iter: each batch must be an (X, y) pair of tensors, got a tuple of 1"),
    _case("evaluate-criterion-type", lambda t: evaluate(mlp(), [], criterion=3), TypeError,
          "criterion: expected a loss"),
    _case("evaluate-loss-no-criterion", lambda t: evaluate_loss(mlp(), [], None), ValueError,
          "criterion is required"),
    # ---- timing
    _case("timer-device", lambda t: Timer("tpu"), ValueError, "device: unknown device"),
    # ---- models
    _case("mlp-hidden", lambda t: mlp(hidden=0), ValueError, "hidden: must be >= 1, got 0"),
    _case("mlp-dropout", lambda t: mlp(dropout=1.0), ValueError, "dropout: must be < 1, got 1.0"),
    _case("cnn-width", lambda t: cnn(width=2.5), ValueError, "width: must be an int >= 1, got 2.5"),
    _case("init-weights-type", lambda t: init_weights(torch.ones(2)), TypeError,
          "m: expected an nn.Module"),
    _case("count-parameters-type", lambda t: count_parameters(None), TypeError,
          "net: expected an nn.Module"),
    # ---- training
    _case("fit-config-type", lambda t: fit(mlp(), [], None, {"num_epochs": 1}), TypeError,
          "config: expected a TrainConfig"),
    _case("fit-net-type", lambda t: fit("mlp", [], None, TrainConfig(**CPU)), TypeError,
          "net: expected an nn.Module"),
    _case("fit-train-iter-type", lambda t: fit(mlp(), 3, None, TrainConfig(**CPU)), TypeError,
          "train_iter: expected a DataLoader"),
    _case("fit-optimizer-type", lambda t: fit(mlp(), [], None, TrainConfig(**CPU),
                                              optimizer="sgd"), TypeError,
          "optimizer: expected a torch.optim optimizer"),
    _case("fit-progress-type", lambda t: fit(mlp(), [], None, TrainConfig(**CPU),
                                             progress="no"), TypeError, "progress: expected"),
    _case("fit-resume-without-out", lambda t: fit(mlp(), [], None, TrainConfig(**CPU),
                                                  resume=True), ValueError, "resume: needs"),
    _case("fit-resume-type", lambda t: fit(mlp(), [], None, TrainConfig(**CPU), out_dir=t,
                                           resume="yes"), TypeError, "resume: expected True"),
    _case("fit-out-unwritable", lambda t: fit(mlp(), [], None, TrainConfig(**CPU),
                                              out_dir=_unwritable(t)), ValueError,
          "cannot be created inside it"),
    _case("fit-resume-missing", lambda t: fit(mlp(), [], None, TrainConfig(**CPU), out_dir=t,
                                              resume=True), ValueError, "resume: no checkpoint"),
    _case("loader-config-type", lambda t: make_loader(DATA, {}, train=True), TypeError,
          "config: expected a TrainConfig"),
    _case("loader-dataset-type", lambda t: make_loader(iter([1]), TrainConfig(**CPU), train=True),
          TypeError, "dataset: expected a map-style Dataset"),
    _case("loader-train-type", lambda t: make_loader(DATA, TrainConfig(**CPU), train="yes"),
          TypeError, "train: must be True or False"),
    # ---- checkpoints
    _case("save-payload-type", lambda t: save_checkpoint(t / "c.pt", [1]), TypeError,
          "payload: expected a dict"),
    _case("save-unloadable", lambda t: save_checkpoint(t / "c.pt", {"x": np.zeros(2)}), TypeError,
          "payload['x'] is a numpy.ndarray, which torch.load(weights_only=True) refuses"),
    _case("save-path-is-folder", lambda t: save_checkpoint(t, {}), ValueError,
          "is a folder; give a file name such as"),
    _case("save-path-type", lambda t: save_checkpoint(3, {}), TypeError, "path: expected a file"),
    _case("load-missing", lambda t: load_checkpoint(t / "nothing.pt"), ValueError,
          "no checkpoint at"),
    _case("load-map-location-cuda-absent", lambda t: load_checkpoint(t / "c.pt", "cuda"),
          ValueError, "map_location: 'cuda' requested but CUDA is not available", no_cuda),
    _case("set-rng-state", lambda t: set_rng_state({}), ValueError,
          "state: expected the dict returned by d2lopt.checkpoint.rng_state()"),
    # ---- measurements and verdicts (validated by their modules already)
    _case("time-repeats-zero", lambda t: time_repeats(lambda: None, repeats=0), ValueError,
          "repeats: must be >= 1"),
    _case("compare-min-effect", lambda t: compare(print, print, min_effect=-1), ValueError,
          "min_effect: must be a fraction >= 0"),
    _case("compare-not-callable", lambda t: compare(print, 3), TypeError,
          "candidate: must be callable with no arguments"),
    _case("fact-not-bool", lambda t: fact("C", "s", "e", holds=1), TypeError,
          "holds: must be True or False"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "error", "match"), CASES)
def test_bad_input_is_refused_with_the_parameter_and_the_fix(tmp_path, call, error, match):
    with pytest.raises(error) as info:
        call(tmp_path)
    assert match in str(info.value)
    assert "\n" not in str(info.value)  # one readable line


def test_at_least_25_distinct_bad_inputs_are_covered() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 25


def test_n_larger_than_the_split_is_refused(monkeypatch) -> None:
    small = (torch.zeros(10, 1, 28, 28, dtype=torch.uint8), torch.zeros(10, dtype=torch.int64))
    monkeypatch.setattr(data_mod, "_synthetic_split", lambda train: small)
    with pytest.raises(ValueError, match="n: the test split has 10 samples, asked for 11"):
        fashion_mnist(False, source="synthetic", n=11)
    with pytest.raises(ValueError, match="n_test: the test split has 10 samples"):
        load_fashion_mnist(4, n_test=11, source="synthetic")
    assert len(fashion_mnist(False, source="synthetic", n=10)[1]) == 10


def test_valid_edge_values_are_accepted(tmp_path) -> None:
    """The checks are not stricter than the API: boundary values still work."""
    edge = dict(num_workers=1, prefetch_factor=1, persistent_workers=True, momentum=0)
    config = TrainConfig(**edge, **CPU)
    kept = (config.num_workers, config.prefetch_factor, config.persistent_workers, config.momentum)
    assert kept == (1, 1, True, 0)  # accepted as given, not clamped or replaced
    assert as_device("cpu") == torch.device("cpu") and as_device(torch.device("cpu")).type == "cpu"
    acc = DeviceAccumulator(1)
    acc.add(torch.ones(1))  # a one-element tensor of shape (1,)
    acc.add(np.float32(2.0))  # numbers of any numeric type
    assert acc[0] == 3.0
    assert mlp(dropout=0.0)(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
    assert measure_loader(DataLoader(DATA, batch_size=4), repeats=1, warmup=0).samples == 8
    assert evaluate(nn.Flatten(), [], None)["samples"] == 0
