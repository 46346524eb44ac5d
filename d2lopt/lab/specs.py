"""``MODULE:ATTR`` -> the learner's object: the one resolver behind ``--dataset`` and ``--model``.

Taught in ``12_putting_it_together``: ``d2lopt ladder --dataset/--model`` and
``d2lopt tune-loader --dataset`` point at the learner's own code this way
(:func:`d2lopt.lab.ladder.load_user_data`, :func:`d2lopt.lab.ladder.load_user_model`,
:func:`d2lopt.lab.tuning.load_dataset`). Names are read by ``pkgutil.resolve_name``, the
standard library's reading of entry-point-style names, so ``attr`` may be dotted
(``pkg.data:Sets.train``). Every error is a :class:`~d2lopt.errors.ParamError` carrying its
parameter, so the command line names the flag and says what to point it at.
"""

from __future__ import annotations

import os
import pkgutil
import sys
from collections.abc import Callable
from typing import Any

from ..errors import ParamError, ParamTypeError

__all__ = ["resolve", "call_factory"]

_EXAMPLES = {
    "dataset": "'mydata:train_set' or 'mypkg.data:make_dataset'",
    "model": "'mymodels:build' or 'mypkg.nets:Net'",
}


def resolve(spec: Any, param: str, *, from_cwd: bool = False) -> Any:
    """``module:attr`` -> the object, errors naming ``param``.

    ``from_cwd`` puts the current folder on ``sys.path`` first, as ``python -m`` does, so a
    command run next to ``mydata.py`` finds it; the Python API leaves ``sys.path`` to its
    caller.
    """
    if not isinstance(spec, str):
        raise ParamTypeError(param, f"expected 'module:attr', got {type(spec).__name__}")
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name.strip() or not attr.strip():
        example = _EXAMPLES.get(param, "'mymodule:name'")
        raise ParamError(param, f"expected 'module:attr' such as {example}, got {spec!r}")
    if from_cwd and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: local modules are importable
    try:
        return pkgutil.resolve_name(spec)
    except ImportError as exc:
        raise ParamError(
            param,
            f"cannot import module {module_name!r} ({exc}); run from the folder that "
            "holds it or install its package",
        ) from None
    except AttributeError:
        raise ParamError(param, f"module {module_name!r} has no attribute {attr!r}") from None
    except ValueError:  # not dotted Python identifiers, e.g. 'my-data:train'
        raise ParamError(
            param,
            f"{spec!r} is not an import path; expected 'module:attr' of Python "
            "identifiers, such as 'mydata:train_set'",
        ) from None


def call_factory(factory: Callable[[], Any], spec: str, param: str) -> Any:
    """``factory()``; what the learner's code raises becomes a bad value of ``param``."""
    try:
        return factory()
    except Exception as exc:  # the learner's factory: report it as a bad value of its flag
        raise ParamError(param, f"calling {spec}() raised {type(exc).__name__}: {exc}") from None
