"""Load the user's model from a MODULE:FACTORY string (the CLI's probe and lyapunov)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from torch import nn


def load_factory(spec: str) -> nn.Module:
    """Import MODULE (a dotted name, or a path to a .py file) and call FACTORY() from it.

    Only the named module and the named callable run. The current directory is searched
    first, as ``python -m`` does.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"MODULE:FACTORY: expected e.g. 'mymodels:make_net', got {spec!r}")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ValueError(f"MODULE:FACTORY: no file {module_name!r}")
        spec_ = importlib.util.spec_from_file_location(path.stem, path)
        if spec_ is None or spec_.loader is None:
            raise ValueError(f"MODULE:FACTORY: cannot import {module_name!r}")
        module = importlib.util.module_from_spec(spec_)
        spec_.loader.exec_module(module)
    else:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            raise ValueError(f"MODULE:FACTORY: cannot import {module_name!r} ({err}); tried "
                             f"the current directory and the installed packages") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise ValueError(f"MODULE:FACTORY: {module_name!r} has no attribute {attr!r}")
    if not callable(factory):
        raise ValueError(f"MODULE:FACTORY: {module_name}.{attr} is not callable")
    model = factory() if not isinstance(factory, nn.Module) else factory
    if not isinstance(model, nn.Module):
        raise ValueError(f"MODULE:FACTORY: {module_name}.{attr}() returned "
                         f"{type(model).__name__}, not an nn.Module")
    return model
