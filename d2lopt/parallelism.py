"""``python -m d2lopt.parallelism`` and ``torchrun ... -m d2lopt.parallelism``: the command name.

The experiment lives in :mod:`d2lopt.dist.parallelism` (taught in
``13_beyond_data_parallelism``); this module only runs it, so the documented commands keep
working. Import from ``d2lopt.dist.parallelism``.
"""

if __name__ == "__main__":
    from d2lopt.dist.parallelism import main
    from d2lopt.distributed import exit_rank

    exit_rank(main())  # not sys.exit: see exit_rank (gloo's thread races the shutdown)
