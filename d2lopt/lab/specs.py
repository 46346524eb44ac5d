"""``MODULE:ATTR`` -> the learner's object: the one resolver behind ``--dataset`` and ``--model``.

Taught in ``12_putting_it_together``: ``d2lopt ladder --dataset/--model`` and
``d2lopt tune-loader --dataset`` point at the learner's own code this way
(:func:`d2lopt.lab.ladder.load_user_data`, :func:`d2lopt.lab.ladder.load_user_model`,
:func:`d2lopt.lab.tuning.load_dataset`). Names are read by ``pkgutil.resolve_name``, the
standard library's reading of entry-point-style names, so ``attr`` may be dotted
(``pkg.data:Sets.train``). Every error is a :class:`~d2lopt.errors.ParamError` carrying its
parameter, so the command line names the flag and says what to point it at.
:func:`check_sample` checks a data set's first item once, where ``--dataset`` is resolved:
every command trains on ``(input, class index)`` pairs, and a dict or a bare tensor there
would otherwise fail deep inside a loader with a message about something else (issue 22).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import types
from collections.abc import Callable
from typing import Any

from ..errors import ParamError, ParamTypeError

__all__ = ["call_factory", "check_sample", "resolve"]

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
        raise ParamError(
            param, f"module {module_name!r} has no attribute {attr!r}{_defined(module_name)}"
        ) from None
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


def _defined(module_name: str, most: int = 12) -> str:
    """``"; it defines: a, b, c"``: the public names the module offers (for a typo).

    Its ``__all__`` where it has one; otherwise what it or its own submodules define (a
    package such as ``torchvision.datasets`` defines its classes in submodules), not what it
    imported from elsewhere (torch, Dataset, ...).
    """
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return ""
    names = [n for n in getattr(module, "__all__", ()) if not n.startswith("_")]
    if not names:
        for name, obj in vars(module).items():
            if name.startswith("_") or isinstance(obj, types.ModuleType):
                continue
            home = (
                getattr(obj, "__module__", None) or module_name
                if isinstance(obj, type) or callable(obj)
                else module_name
            )
            if home == module_name or home.startswith(module_name + "."):
                names.append(name)
    if not names:
        return ""
    more = f" (and {len(names) - most} more)" if len(names) > most else ""
    return f"; it defines: {', '.join(sorted(names)[:most])}{more}"


def _describe(value: Any) -> str:
    """A sample's part as a learner would name it: ``a dict with keys 'image', 'label'``."""
    if isinstance(value, dict):
        keys = ", ".join(repr(k) for k in list(value)[:6])
        return f"a dict with keys {keys}" if value else "an empty dict"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} item(s)"
    shape = getattr(value, "shape", None)
    kind = type(value)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    if shape is not None:
        return f"a {name} of shape {tuple(shape)}, dtype {getattr(value, 'dtype', '?')}"
    if kind.__module__ != "builtins":  # its repr may carry an address: the type says enough
        return f"a {name}"
    text = repr(value)
    return f"a {name} ({text if len(text) <= 40 else text[:37] + '...'})"


_INPUTS = "a tensor (or NumPy array) of numbers"
_LABELS = "an integer class index (int, or an integer tensor of one element)"
_ADAPT = (
    "wrap the data set in one whose __getitem__ returns (x, y), e.g. "
    "`return item['image'], item['label']`; in Python, a DataLoader collate_fn that builds "
    "(X, y) batches works too"
)


def check_sample(dataset: Any, spec: str, param: str = "dataset", *, labels: bool = True) -> None:
    """Check ``dataset[0]`` once: an ``(input, class index)`` pair, or say what it is.

    What is found and what is expected, and how to adapt, in one :class:`ParamError` about
    ``param``: the loaders and the training step expect ``(x, y)`` with ``x`` numbers and
    ``y`` an integer class index (cross-entropy). ``labels=False`` (tune-loader, which
    only loads and copies ``x``) leaves ``y`` to ``default_collate``.
    """
    import numpy as np
    import torch

    try:
        item = dataset[0]
    except Exception as exc:  # the learner's __getitem__
        raise ParamError(
            param, f"{spec}[0] raised {type(exc).__name__}: {' '.join(str(exc).split())}"
        ) from None
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
        raise ParamError(
            param,
            f"an item of {spec} is {_describe(item)}; expected an (x, y) pair: x {_INPUTS}, "
            f"y {_LABELS}; {_ADAPT}",
        )
    x, y = item
    if not isinstance(x, (torch.Tensor, np.ndarray)) or x.dtype == object:
        hint = ("; for PIL images add a transform such as torchvision.transforms.ToTensor()"
                if type(x).__module__.startswith("PIL") else f"; {_ADAPT}")  # fmt: skip
        raise ParamError(
            param, f"x of an item of {spec} is {_describe(x)}; expected {_INPUTS}{hint}"
        )
    if not labels:
        return
    if isinstance(y, torch.Tensor):
        label_ok = y.numel() == 1 and not (y.is_floating_point() or y.is_complex())
        label_ok = label_ok and y.dtype != torch.bool
    elif isinstance(y, np.ndarray):
        label_ok = y.size == 1 and np.issubdtype(y.dtype, np.integer)
    else:
        label_ok = isinstance(y, (int, np.integer)) and not isinstance(y, bool)
    if not label_ok:
        raise ParamError(
            param,
            f"y of an item of {spec} is {_describe(y)}; expected {_LABELS}: return the "
            "class index as an int (or a torch.long tensor) from __getitem__",
        )
