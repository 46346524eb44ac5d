"""The ladder on any machine: work sized from what a round costs, on simulated clocks (21).

A preset sized for one machine gave a 2-core AVX2 laptop one round per decision, and every
rung was rejected for it. These tests run the sizing, the budget plan and the time
breakdown on simulated clocks: a slow machine gets less work per round, never a one-round
rejection; what cannot be afforded is *undecided*; a run's seconds are split where they
went. No wall-clock threshold anywhere.
"""

from __future__ import annotations

import types

import pytest
import torch

import d2lopt.devices
import d2lopt.lab.ladder as ladder
from d2lopt.lab.ladder import HostSyncs, Plan, Timed
from d2lopt.measure import compare, size_rounds
from d2lopt.verdict import INCONCLUSIVE


class Machine:
    """A simulated clock, and a round that costs ``fixed + per_batch * batches``."""

    def __init__(self, fixed: float, per_batch: float) -> None:
        self.now, self.fixed, self.per_batch = 0.0, fixed, per_batch

    def clock(self) -> float:
        return self.now

    def one_round(self, batches: int) -> None:
        self.now += self.fixed + self.per_batch * batches

    def entry(self, batches: int, factor: float = 1.0):
        def run() -> None:
            self.now += factor * (self.fixed + self.per_batch * batches) / 2

        return run


def test_a_slower_machine_gets_fewer_batches_and_still_its_rounds() -> None:
    fast, slow = Machine(0.2, 0.05), Machine(0.8, 0.4)  # the same decision, 4-8x the cost
    sized = {}
    for name, m in (("fast", fast), ("slow", slow)):
        sized[name] = size_rounds(m.one_round, budget=30, rounds=12, largest=64, timer=m.clock)
    assert sized["slow"].size < sized["fast"].size
    for s in sized.values():
        assert s.fits and s.rounds >= 12
        assert s.spent + 12 * s.round_seconds <= 30 + 1e-9  # probes and rounds fit the budget
        assert s.round_seconds == pytest.approx(
            (0.2 if s is sized["fast"] else 0.8) + (0.05 if s is sized["fast"] else 0.4) * s.size
        )  # the prediction is the machine's true cost here (a line through two probes)


def test_a_fixed_cost_is_told_apart_from_work() -> None:
    """Worker start-up or a Trainer's set-up does not grow with the batches: a second probe
    sees it, so the size is not held back as if every second were work."""
    m = Machine(3.0, 0.05)
    s = size_rounds(m.one_round, budget=60, rounds=12, largest=8, timer=m.clock)
    assert [k for k, _ in s.probes][:2] == [1, 2] and s.size >= 4  # not held at 1


def test_a_machine_too_slow_for_the_budget_keeps_the_smallest_size_and_says_so() -> None:
    m = Machine(5.0, 5.0)
    s = size_rounds(m.one_round, budget=30, rounds=12, largest=64, timer=m.clock)
    assert s.size == 1 and not s.fits and s.rounds == 2
    assert s.note.startswith("a round costs 10.00 s even at 1 batch an epoch: 12 rounds need")


def test_sizing_checks_its_arguments() -> None:
    for bad in ({"rounds": 0}, {"largest": 0}, {"budget": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            size_rounds(lambda k: None, **({"budget": 1, "rounds": 2, "largest": 4} | bad))


def test_on_a_slow_machine_noise_is_measured_in_enough_rounds_and_left_undecided() -> None:
    """Two entries of the same speed under noise (±20 % a run): sized from what their rounds
    cost, they get the rounds an interval needs, and the interval straddles the line: the
    verdict is inconclusive, which the climb files as undecided, never as rejected."""
    import random

    m = Machine(0.8, 0.4)
    budget = 30.0
    s = size_rounds(m.one_round, budget=budget, rounds=12, largest=64, timer=m.clock)
    noise = random.Random(0)

    def entry():
        def run() -> None:
            m.now += (m.fixed + m.per_batch * s.size) / 2 * noise.uniform(0.8, 1.2)

        return run

    c = compare(entry(), entry(), max_seconds=budget - s.spent, warmup=0, number=1,
                timer=m.clock)  # fmt: skip
    assert c.rounds >= 9 and c.verdict == INCONCLUSIVE
    assert c.ci[0] < 1.05 < c.ci[1]  # an interval, straddling the line


def test_the_plan_shares_what_is_left_by_weight() -> None:
    now = [0.0]
    plan = Plan(100.0, {"a": 1.0, "b": 1.0, "final rounds": 2.0}, reserve=0.0,
                clock=lambda: now[0])  # fmt: skip
    assert plan.share("a") == pytest.approx(25.0)
    now[0] = 10.0  # "a" stopped early, at a planned look: its time goes to the rest
    assert plan.share("b") == pytest.approx(90.0 / 3)
    now[0] = 70.0  # "b" overran: the final rounds get what is left
    assert plan.share("final rounds") == pytest.approx(30.0)
    assert plan.eta() == pytest.approx(30.0)


def test_bf16_without_units_is_a_brief_decision(monkeypatch) -> None:
    monkeypatch.setattr(d2lopt.devices, "cpu_has_bf16_units", lambda: False)
    assert ladder._bf16_emulated(torch.device("cpu"), "bf16")
    monkeypatch.setattr(d2lopt.devices, "cpu_has_bf16_units", lambda: True)
    assert not ladder._bf16_emulated(torch.device("cpu"), "bf16")
    assert not ladder._bf16_emulated(torch.device("cpu"), "off")


@pytest.mark.parametrize(
    "flags, env, units",
    [
        ("avx512f avx512_bf16", {}, True),
        ("avx512f amx_bf16", {}, True),
        ("avx512f avx2", {}, False),
        ("avx512f avx512_bf16", {"ONEDNN_MAX_CPU_ISA": "AVX2"}, False),  # the AVX2 laptop
        ("avx512f avx512_bf16", {"ATEN_CPU_CAPABILITY": "avx2"}, False),
        ("avx512f avx512_bf16", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, True),
    ],
)
def test_bf16_units_follow_the_cpu_and_the_isa_caps(monkeypatch, tmp_path, flags, env, units):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"flags\t: sse {flags}\n")
    real_open = open
    monkeypatch.setattr(d2lopt.devices, "open", lambda path, *a, **k: real_open(
        cpuinfo if path == "/proc/cpuinfo" else path, *a, **k), raising=False)  # fmt: skip
    for name in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert d2lopt.devices.cpu_has_bf16_units() is units


# ------------------------------------------------------------------------------ breakdown
def test_host_syncs_are_counted_and_the_methods_restored() -> None:
    x = torch.tensor([1.5, 2.0])
    with HostSyncs() as syncs:
        x.sum().item()
        float(x[0])
        x.tolist()
        assert "item" in torch.Tensor.__dict__
    assert syncs.calls == 3 and syncs.seconds >= 0
    assert "item" not in torch.Tensor.__dict__ and x[1].item() == 2.0  # the originals again


def test_a_runs_seconds_are_split_where_they_went(monkeypatch) -> None:
    """2 epochs of 3 batches on a simulated clock: start-up 1 s, each later batch waited for
    0.5 s, steps of 1 s of which 0.25 s a host sync (the first step 3 s: compilation),
    evaluation 2 s after each epoch, 0.5 s of other work at the end."""
    now = [0.0]
    monkeypatch.setattr(ladder, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    syncs = HostSyncs()

    class Loader:
        def __iter__(self):
            for _ in range(3):
                now[0] += 1.0 if self.first else 0.5  # start-up, then a wait per batch
                self.first = False
                yield torch.zeros(2, 1), torch.zeros(2)

        first = True

    timed = Timed(Loader(), 0.0, syncs=syncs)
    for epoch in range(2):
        for i, _ in enumerate(timed):
            step = 3.0 if epoch == i == 0 else 1.0
            now[0] += step - 0.25
            syncs.seconds += 0.25  # a loss.item() waits for the step
            now[0] += 0.25
        syncs.seconds += 0.5  # the evaluation reads its losses too
        now[0] += 2.0
    now[0] += 0.5
    parts = timed.stats(now[0]).breakdown()
    assert parts["fixed"] == pytest.approx(1.0 + 2.0)  # start-up + the first step's extra
    assert parts["data_wait"] == pytest.approx(5 * 0.5)  # the 5 batches after the first
    assert parts["host_syncs"] == pytest.approx(6 * 0.25 + 2 * 0.5)
    assert parts["compute"] == pytest.approx(6 * 1.0 - 6 * 0.25)
    assert parts["evaluation"] == pytest.approx(2 * (2.0 - 0.5) + 0.5)  # the last: until the end
    assert sum(parts.values()) == pytest.approx(now[0])


def test_lightning_steps_are_timed_by_its_hooks_and_its_epoch_ends_seen(tmp_path) -> None:
    """Lightning asks for batch i + 1 before it runs step i, and stops at ``len()`` without
    asking for one more: its steps come from its batch hooks, and unsized, its loader is
    read to the end each epoch, so the time after the last step (evaluation) is seen."""
    pytest.importorskip("lightning")
    import time

    from torch.utils.data import DataLoader, TensorDataset

    from d2lopt.lab.peers import lightning_fit
    from d2lopt.models import mlp

    ds = TensorDataset(torch.randn(64, 1, 28, 28), torch.arange(64) % 10)
    start = time.perf_counter()
    timed = Timed(DataLoader(ds, batch_size=16), start)
    trainer = lightning_fit(mlp(), ladder._Unsized(timed), DataLoader(ds, batch_size=32),
                            max_epochs=2, lr=0.1, momentum=0.9, device=torch.device("cpu"),
                            precision="32-true", root_dir=tmp_path, defaults=False)  # fmt: skip
    seconds = time.perf_counter() - start
    steps = trainer.lightning_module.step_seconds
    assert len(steps) == 2 * 4 and timed.between > 0  # every step; both epoch ends
    timed.steps_from(steps)
    stats = timed.stats(seconds)
    assert stats.first_step == steps[0] and stats.stepped == pytest.approx(sum(steps[1:]))
    assert sum(v or 0 for v in stats.breakdown().values()) == pytest.approx(seconds)


def test_a_first_probe_that_paid_one_off_costs_is_measured_again() -> None:
    """The first call of anything pays imports and set-up once: a first round that looks
    too dear is measured again before the size is held at its smallest."""
    m = Machine(0.5, 0.1)
    first = [True]

    def one_round(batches: int) -> None:
        m.one_round(batches)
        if first[0]:  # a library imported on the first call: 5 s, once
            m.now += 5.0
            first[0] = False

    s = size_rounds(one_round, budget=60, rounds=12, largest=64, timer=m.clock)
    assert s.probes[0] == (1, pytest.approx(0.6)) and s.size > 1 and s.fits
