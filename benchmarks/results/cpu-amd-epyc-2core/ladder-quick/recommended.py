"""The settings kept by `d2lopt ladder` on cpu: AMD EPYC, 2 cores; paste what you need.

Measured on: JPEGs of 32px on disk, decoded and augmented per sample (RandomResizedCrop + flip);
  d2lopt.models.cnn(in_channels=3); batch 32, 2 epochs a run. Each kept rung held against the
  best rung below it (12_putting_it_together).

Kept:
- + decode once: 1.62x [1.48, 1.78], 14 rounds
- + AMP: 1.23x [1.13, 1.30], 14 rounds
- + loop hygiene: 1.38x [1.29, 1.47], 14 rounds
- + channels_last: 1.30x [1.20, 1.40], 14 rounds
Not kept:
- + loader workers (rejected): 0.39x [0.37, 0.44], 12 rounds against baseline: does not hold
- + loader threads (rejected): 0.81x [0.74, 0.88], 13 rounds against baseline: does not hold
- + pin_memory/non_blocking (skipped): needs CUDA; on cpu no batch crosses a host-to-device link
- + GPU decode (skipped): needs CUDA (nvJPEG)
- + torch.compile (skipped): optional: add --compile (its first-call compilation is timed apart)

Run: python recommended.py [--n-train N] [--epochs N] (the sizes of the ladder's runs by
  default).
"""

import argparse
import math

import torch

import d2lopt

# --n-train, --n-test, --epochs override the sizes (default: the ladder's runs)
N_TRAIN = 256
N_TEST = 64
EPOCHS = 2
IMAGE_SIZE = 32  # the standard JPEGs' side
BATCH_SIZE = 32
DEVICE = "cpu"
DATA_DIR = None
SEED = 0


# (a) data loading, as kept: decode once + batched augmentation (d2lopt)
def loaders(train_set, test_set, device, size):
    from d2lopt.lab.input_pipelines import DeviceAugmentLoader, decode_images

    def decoded(ds, train):  # every file decoded once; crop + flip per batch
        cache = decode_images(ds.samples, device)
        return DeviceAugmentLoader(
            cache.images, cache.labels, batch_size=BATCH_SIZE, size=size, seed=SEED, train=train
        )

    train_iter, test_iter = decoded(train_set, True), decoded(test_set, False)
    return train_iter, test_iter


# (b) the training switches, as kept (every other field keeps TrainConfig's default)
def train_config(epochs, device):
    return d2lopt.TrainConfig(
        num_epochs=epochs,
        batch_size=BATCH_SIZE,
        device=device,
        seed=SEED,
        amp="bf16",
        eval_every=epochs,
        channels_last=True,
    )


# (c) the same switches in a hand-written PyTorch loop:
#   with torch.autocast(device_type, dtype=torch.bfloat16):  # forward + loss
#   net = net.to(memory_format=torch.channels_last)  # once, before the optimizer
#   sum the loss on the device (total += loss.sum().detach()); call .item() once per epoch
#   evaluate the test set once at the end, not train + test every epoch


# (d) the ladder's workload, trained with the kept settings
def subset(ds, n):
    """At most n samples, seeded (None: all)."""
    if n is None or len(ds) <= n:
        return ds
    keep = torch.randperm(len(ds), generator=torch.Generator().manual_seed(SEED))
    return torch.utils.data.Subset(ds, keep[:n].tolist())


def workload(n_train, n_test, size, data_dir):
    from d2lopt.lab.tuning import standard_dataset
    from d2lopt.models import cnn, init_weights

    train_set = standard_dataset(n_train, size, train=True, root=data_dir)
    test_set = standard_dataset(n_test, size, train=False, root=data_dir)
    torch.manual_seed(SEED)  # the ladder's weights
    net = cnn(in_channels=3)
    net.apply(init_weights)
    return train_set, test_set, net


def main(argv=None):
    p = argparse.ArgumentParser(description="Train with the settings d2lopt ladder kept.")
    p.add_argument("--n-train", type=int, default=N_TRAIN)
    p.add_argument("--n-test", type=int, default=N_TEST)
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    p.add_argument("--device", default=DEVICE)
    p.add_argument("--data-dir", default=DATA_DIR)
    args = p.parse_args(argv)
    train_set, test_set, net = workload(args.n_train, args.n_test, args.image_size, args.data_dir)
    config = train_config(args.epochs, args.device)
    print(config)
    train_iter, test_iter = loaders(train_set, test_set, config.torch_device, args.image_size)
    records = d2lopt.fit(net, train_iter, test_iter, config)
    loss = records[-1]["test_loss"]
    print(f"final test loss: {loss:.4f}")
    return 0 if math.isfinite(loss) else 1


if __name__ == "__main__":
    raise SystemExit(main())
