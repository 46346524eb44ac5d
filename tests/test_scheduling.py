"""Scheduling ranks (d2lopt.lab: ranks, cluster, scaling, comm, balance): persistent ranks,
lockstep comparisons, scaling verdicts, the simulation.

The pool tests spawn two real CPU ranks joined by gloo (once for the module) and check what
they compute and who runs what, never how fast: the only timing verdict asserted is a
known-truth pair (a 50 ms sleep against a step of about a millisecond).
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch.distributed as dist

from d2lopt.lab import scaling as scaling_mod
from d2lopt.lab.balance import delay_name, straggler_compare
from d2lopt.lab.cluster import (
    Job,
    amdahl_fraction,
    describe_curve,
    overhead_share,
    simulate,
    speedup_curve,
)
from d2lopt.lab.comm import comm_compare
from d2lopt.lab.ranks import RankPool, lockstep_compare_many
from d2lopt.lab.scaling import (
    compare_scaling,
    data_parallel_step,
    load_scaling,
    reuse_or_measure,
    save_scaling,
    scaling_verdict,
)
from d2lopt.measure import Comparison, Sweep
from d2lopt.verdict import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE


# ------------------------------------------------------------------------------ rank functions
# (module level: the spawned ranks import them by name)
def who(rank: int, world: int, *, add: int = 0) -> tuple[int, int, int]:
    return rank, world, dist.get_world_size() + add


def fail_on(rank: int, world: int, *, bad: int) -> int:
    if rank == bad:
        raise ValueError(f"rank {rank} was told to fail")
    return rank


def lockstep_counts(rank: int, world: int) -> tuple[dict[str, int], Sweep | None]:
    """Each rank counts the calls of each variant; rank 0 also returns the sweep."""
    calls = {"a": 0, "b": 0}

    def variant(name: str):
        def call() -> None:
            calls[name] += 1
            dist.barrier()  # a collective: a rank running another variant would not match

        return call

    sweep = lockstep_compare_many(
        {"a": variant("a"), "b": variant("b")}, reference="a", max_seconds=1.0, number=2
    )
    return calls, sweep


@pytest.fixture(scope="module")
def pool():
    with RankPool(2, timeout_s=60) as p:
        yield p


# ------------------------------------------------------------------------------ RankPool
@pytest.mark.slow
def test_pool_runs_a_function_on_every_rank_in_rank_order(pool: RankPool) -> None:
    assert pool.run(who, add=10) == [(0, 2, 12), (1, 2, 12)]


@pytest.mark.slow
def test_pool_reports_which_rank_failed_and_keeps_working(pool: RankPool) -> None:
    with pytest.raises(RuntimeError, match=r"rank 1 failed:[\s\S]*told to fail"):
        pool.run(fail_on, bad=1)
    assert pool.run(fail_on, bad=5) == [0, 1]  # both ranks still answer


@pytest.mark.slow
def test_lockstep_every_rank_runs_the_variant_rank_0_times(pool: RankPool) -> None:
    (calls0, sweep), (calls1, nothing) = pool.run(lockstep_counts)
    assert isinstance(sweep, Sweep) and nothing is None
    assert calls0 == calls1  # the same variants, the same number of times
    # warm-up + calibration (1 call each) and `number` calls per variant per round
    assert calls0["a"] == 1 + 2 * sweep.rounds


@pytest.mark.slow
def test_straggler_slows_rank_0(pool: RankPool) -> None:
    sweep, nothing = pool.run(straggler_compare, delays=[0.0, 0.05], width=16, max_seconds=4)
    assert nothing is None
    assert sorted(sweep.seconds) == ["+50 ms", "no delay"] and sweep.reference == "+50 ms"
    # known truth: rank 0 waits for a 50 ms sleep in every all-reduce, against a ~1 ms step
    assert sweep.comparisons["no delay"].verdict == HOLDS


@pytest.mark.slow
def test_comm_compare_and_compare_scaling_return_comparisons(pool: RankPool) -> None:
    configs = [{"name": "plain"}, {"name": "fp16", "hook": "fp16"}]
    sweep, _ = pool.run(comm_compare, configs=configs, reference="plain", widths=(8, 8, 2),
                        max_seconds=1.0)  # fmt: skip
    assert list(sweep.seconds) == ["plain", "fp16"] and list(sweep.comparisons) == ["fp16"]
    r = compare_scaling(pool, batch=8, steps=1, max_seconds=1.0)
    assert isinstance(r, Comparison) and r.label == "2 ranks vs 1 process"
    assert r.rounds == len(r.baseline_seconds) == len(r.candidate_seconds) >= 1
    ratios = [b / c for b, c in zip(r.baseline_seconds, r.candidate_seconds, strict=True)]
    assert min(ratios) * (1 - 1e-9) <= r.speedup <= max(ratios) * (1 + 1e-9)  # within its rounds


def test_pool_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="nprocs"):
        RankPool(0)
    with pytest.raises(ValueError, match="device"):
        RankPool(2, device="mps")
    with pytest.raises(ValueError, match="timeout_s"):
        RankPool(2, timeout_s=0)


def test_data_parallel_step_checks_its_mode_and_runs_alone() -> None:
    with pytest.raises(ValueError, match="mode"):
        data_parallel_step(0, 1, mode="fast", steps=1, batch=4)
    with pytest.raises(ValueError, match="model"):
        data_parallel_step(0, 1, mode="one", steps=1, batch=4, model="resnet")
    assert data_parallel_step(0, 1, mode="one", steps=2, batch=4) is None  # no process group
    assert data_parallel_step(1, 2, mode="one", steps=2, batch=4) is None  # rank 1 idles


def test_delay_names() -> None:
    assert [delay_name(d) for d in (0.0, 0.01, 0.0305)] == ["no delay", "+10 ms", "+30.5 ms"]


# ------------------------------------------------------------------------------ verdicts
def _comparison(speedup: float, ci: tuple[float, float], verdict: str) -> Comparison:
    return Comparison("2 ranks vs 1 process", speedup, ci, 12, verdict, "why", 0.05, 0.95,
                      (1.0,) * 12, (1.0 / speedup,) * 12)  # fmt: skip


def test_an_efficiency_above_100_percent_is_an_invalid_measurement() -> None:
    row = scaling_verdict(_comparison(2.6, (1.7, 3.8), HOLDS), 2, "B1", "2 processes are faster")
    assert row.verdict == INCONCLUSIVE and row.condition == "invalid measurement"
    assert "130%" in row.evidence and "[1.70, 3.80], 12 rounds" in row.evidence


class _Pool:  # what the record reads from a RankPool: no process is started
    world, device = 2, "cpu"


def test_b1_is_measured_once_and_reused_by_the_next_notebook(tmp_path, monkeypatch) -> None:
    path = tmp_path / "runs" / "b1.json"
    calls = []

    def measure(pool, **kwargs):
        calls.append(kwargs)
        return _comparison(0.45, (0.41, 0.50), DOES_NOT_HOLD)

    monkeypatch.setattr(scaling_mod, "compare_scaling", measure)
    # 11_scheduling run alone: nothing recorded yet, so it measures, records, and says so
    first, source = reuse_or_measure(_Pool(), path, batch=64, by="11_scheduling", max_seconds=6)
    assert len(calls) == 1 and calls[0]["max_seconds"] == 6
    assert source.startswith("measured here (11_scheduling)")
    # 10_ddp records its own measurement; 11 then reuses it: one answer, no second run
    saved = _comparison(0.29, (0.26, 0.32), DOES_NOT_HOLD)
    save_scaling(saved, _Pool(), path, batch=64, by="10_ddp")
    again, source = reuse_or_measure(_Pool(), path, batch=64, by="11_scheduling")
    assert len(calls) == 1 and again == saved and source.startswith("measured by 10_ddp at ")
    # another set-up (batch, or another machine's cores) is not the same measurement
    assert load_scaling(_Pool(), path, batch=32) is None
    monkeypatch.setattr(scaling_mod, "usable_cores", lambda: 96)
    assert load_scaling(_Pool(), path, batch=64) is None
    path.write_text("{not json")
    assert load_scaling(_Pool(), path, batch=64) is None
    assert first.speedup == 0.45


def test_a_valid_scaling_verdict_keeps_the_interval_and_adds_the_efficiency() -> None:
    row = scaling_verdict(_comparison(0.8, (0.7, 0.9), DOES_NOT_HOLD), 2, "B1", "faster")
    assert row.verdict == DOES_NOT_HOLD
    assert row.evidence == "0.80x [0.70, 0.90], 12 rounds; efficiency 40%"


# ------------------------------------------------------------------------------ simulation
JOBS = [
    Job("A", arrival=0, work=1600, workers=4),
    Job("B", arrival=60, work=800, workers=4),
    Job("C", arrival=120, work=400, workers=8),
    Job("urgent", arrival=180, work=200, workers=4, priority=1),
    Job("D", arrival=240, work=600, workers=2),
]


def test_speedup_curve_keeps_measured_points_and_follows_amdahl() -> None:
    assert amdahl_fraction({1: 1.0, 2: 1.9}) == pytest.approx(0.947, abs=1e-3)
    assert amdahl_fraction({1: 1.0, 2: 0.5}) == 0.0  # a slowdown: nothing to gain
    curve = speedup_curve({1: 1.0, 2: 1.9})
    assert curve(2) == 1.9 and curve(8) == pytest.approx(5.85, abs=0.01)
    with pytest.raises(ValueError, match="speedups"):
        speedup_curve({2: 1.5})


def test_a_measured_slowdown_is_a_curve_that_slows_down_not_amdahls_flat_line() -> None:
    # 11_scheduling measured 0.45x on 2 ranks; Amdahl's p = 0 would extrapolate 0.45 forever
    # (and gives 1.0, not 0.45, at any n): the overhead model keeps slowing down towards 1/k
    slow = speedup_curve({1: 1.0, 2: 0.45})
    k = overhead_share({1: 1.0, 2: 0.45})
    assert k == pytest.approx(2 / 0.45 - 1)
    assert slow(2) == 0.45 and slow(4) == pytest.approx(4 / (1 + 3 * k))
    assert 1 / k < slow(8) < slow(4) < slow(2) < 1
    assert "slowdown" in describe_curve({1: 1.0, 2: 0.45})
    # where Amdahl's law fits, the model is Amdahl's law: the same p and the same curve
    assert overhead_share({1: 1.0, 2: 1.9}) == pytest.approx(1 - amdahl_fraction({1: 1.0, 2: 1.9}))
    assert describe_curve({1: 1.0, 2: 1.9}) == "Amdahl's law, parallel fraction p = 0.947"
    assert speedup_curve({1: 1.0, 2: 1.0})(8) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="speedups: .*efficiency above 100"):
        speedup_curve({1: 1.0, 2: 2.2})  # superlinear: no curve fits an invalid measurement


def test_simulated_schedules_of_the_notebook() -> None:
    curve = speedup_curve({1: 1.0, 2: 1.9})
    results = {p: simulate(JOBS, 8, p, curve, resize_cost=10.0) for p in ("fifo", "priority")}
    results["elastic"] = simulate(JOBS, 8, "elastic", curve, resize_cost=10.0)
    mean = {p: round(statistics.fmean(r.jct(JOBS).values()), 1) for p, r in results.items()}
    urgent = {p: round(r.jct(JOBS)["urgent"], 1) for p, r in results.items()}
    assert mean == {"fifo": 424.6, "priority": 376.6, "elastic": 326.3}
    assert urgent == {"fifo": 409.5, "priority": 169.5, "elastic": 57.9}
    assert math.isclose(results["fifo"].makespan(), results["priority"].makespan())
    with pytest.raises(ValueError, match="policy"):
        simulate(JOBS, 8, "random", curve)
