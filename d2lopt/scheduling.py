"""The scheduling experiments of ``11_scheduling`` (and B1 of ``10_ddp``), by one import path.

The notebooks import their apparatus from here; it lives in :mod:`d2lopt.lab`, one module
per job: the rank pool and launcher (:mod:`~d2lopt.lab.ranks`), load balancing
(:mod:`~d2lopt.lab.balance`), communication (:mod:`~d2lopt.lab.comm`), one process vs N
ranks (:mod:`~d2lopt.lab.scaling`) and the cluster simulation (:mod:`~d2lopt.lab.cluster`).
"""

from .lab.balance import delay_name, sampler_shards, straggler_compare, uneven_inputs_worker
from .lab.cluster import Job, SimResult, amdahl_fraction, simulate, speedup_curve
from .lab.comm import (
    COMM_WIDTHS,
    CollectiveCounter,
    comm_compare,
    comm_model,
    comm_worker,
    count_collectives,
)
from .lab.ranks import RankPool, launch, lockstep_compare_many
from .lab.scaling import compare_scaling, data_parallel_step, scaling_verdict

__all__ = [
    "COMM_WIDTHS",
    "CollectiveCounter",
    "Job",
    "RankPool",
    "SimResult",
    "amdahl_fraction",
    "comm_compare",
    "comm_model",
    "comm_worker",
    "compare_scaling",
    "count_collectives",
    "data_parallel_step",
    "delay_name",
    "launch",
    "lockstep_compare_many",
    "sampler_shards",
    "scaling_verdict",
    "simulate",
    "speedup_curve",
    "straggler_compare",
    "uneven_inputs_worker",
]
