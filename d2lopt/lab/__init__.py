"""Apparatus the notebooks call: experiments, workers and simulations, not re-exported.

``import d2lopt`` exports what the notebooks *teach* (fit, compare, the loaders...); this
package holds the machinery a notebook runs to measure a lesson: rank pools and worker
functions for the many-process experiments (``10_ddp``, ``11_scheduling``), the cluster
simulation. Import its modules by name, e.g. ``from d2lopt.lab.ranks import RankPool``.
"""
