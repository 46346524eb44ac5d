"""The programs ``torchrun`` starts, and the process-group environment they share.

* :mod:`~d2lopt.dist.distributed`: set-up and teardown from torchrun's environment,
  :class:`~d2lopt.dist.distributed.Replicas` (the DDP switches :func:`d2lopt.fit` uses for
  N ranks), rank-0 logging, ``torchrun_command`` (taught in ``10_ddp``).
* :mod:`~d2lopt.dist.ddp`: the DDP program, run as ``python -m d2lopt.ddp`` or
  ``torchrun ... -m d2lopt.ddp`` (``10_ddp``, ``11_scheduling``).
* :mod:`~d2lopt.dist.sharding`, :mod:`~d2lopt.dist.pipeline`,
  :mod:`~d2lopt.dist.parallelism`: FSDP2, pipeline stages, and the experiment of
  ``13_beyond_data_parallelism`` (``python -m d2lopt.parallelism``).

Not re-exported by ``import d2lopt``: import the modules by name, e.g.
``from d2lopt.dist.distributed import Replicas``. The tiny modules ``d2lopt/ddp.py`` and
``d2lopt/parallelism.py`` only keep the documented ``-m`` command names running.
"""
