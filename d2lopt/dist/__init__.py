"""The programs ``torchrun`` starts, and what only they use.

* :mod:`~d2lopt.dist.ddp`: the DDP program, run as ``python -m d2lopt.ddp`` or
  ``torchrun ... -m d2lopt.ddp`` (``10_ddp``, ``11_scheduling``); its flags in
  :mod:`~d2lopt.dist.flags` (no PyTorch: ``d2lopt ddp`` shows and checks them).
* :mod:`~d2lopt.dist.pipeline`, :mod:`~d2lopt.dist.parallelism`: pipeline stages and the
  experiment of ``13_beyond_data_parallelism`` (``python -m d2lopt.parallelism``).

What :func:`d2lopt.fit` needs to train N ranks (process-group set-up and teardown,
:class:`~d2lopt.distributed.Replicas`, the FSDP2 wrap) lives in the core:
:mod:`d2lopt.distributed` and :mod:`d2lopt.sharding`. Not re-exported by ``import d2lopt``:
import the modules by name. The tiny modules ``d2lopt/ddp.py`` and ``d2lopt/parallelism.py``
only keep the documented ``-m`` command names running.
"""
