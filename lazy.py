"""`tf`: TensorFlow, imported at the first use of one of its names.

The modules the command line reads (noise.py's registry and hyperparameters, attack.py's norms,
and layers.py under them) use it, so that every flag is checked in a fraction of a second, before
TensorFlow starts (1-5 s) and before it reads TF_XLA_FLAGS.
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    """A stand-in for the module of this name that imports it when one of its names is read."""

    def __getattr__(self, name: str) -> Any:
        return getattr(importlib.import_module(self.__name__), name)


tf: Any = LazyModule("tensorflow")
