"""``python -m d2lopt.ddp`` and ``torchrun ... -m d2lopt.ddp``: the documented command name.

The DDP program lives in :mod:`d2lopt.dist.ddp` (taught in ``10_ddp``); this module only runs
it, so every command the README and the notebooks show keeps working. Import from
``d2lopt.dist.ddp``.
"""

if __name__ == "__main__":
    from d2lopt.dist.ddp import main
    from d2lopt.distributed import exit_rank

    exit_rank(main())  # not sys.exit: see exit_rank (gloo's thread races the shutdown)
