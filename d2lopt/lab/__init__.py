"""Apparatus the notebooks call: experiments, workers and simulations, not re-exported.

``import d2lopt`` exports what the notebooks *teach* (fit, compare, the loaders...); this
package holds the machinery a notebook runs to measure a lesson:

* the article's code, kept literally as the baseline (:mod:`~d2lopt.lab.article`);
* teaching data sets (:mod:`~d2lopt.lab.datasets`, ``03_dataset_dataloader``);
* the data sets that show workers' memory: copy-on-read and prefetched bytes
  (:mod:`~d2lopt.lab.copy_on_read`, ``14_memory``);
* loader experiments and their measurements (:mod:`~d2lopt.lab.loading`,
  :mod:`~d2lopt.lab.bench`), transfers (:mod:`~d2lopt.lab.transfer`), input pipelines
  (:mod:`~d2lopt.lab.input_pipelines`), loader tuning (:mod:`~d2lopt.lab.tuning`);
* the ladder (:mod:`~d2lopt.lab.ladder`, its report :mod:`~d2lopt.lab.ladder_report`, ``12``);
* rank pools and worker functions for the many-process experiments (``10_ddp``,
  ``11_scheduling``: :mod:`~d2lopt.lab.ranks`, ``balance``, ``comm``, ``scaling``), the
  cluster simulation (:mod:`~d2lopt.lab.cluster`).

Import its modules by name, e.g. ``from d2lopt.lab.ranks import RankPool``.
"""
