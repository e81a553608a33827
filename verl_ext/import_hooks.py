"""Run a callback right after a named module has been imported (or at once, if it already has been).

The CPU plugins register into verl's registries (platform, engine, rollout), which live in modules that are expensive
to import (the FSDP engine pulls in transformers/peft; the rollout base pulls in all worker configs). Importing them
eagerly from ``verl_ext.cpu`` would (a) make ``import verl_ext.cpu.tiny_qwen25vl`` cost ~10 s and (b) run inside
``import verl`` when the package is loaded through ``VERL_USE_EXTERNAL_MODULES`` (the circular-import trap).

Instead each registration is deferred to the moment verl itself imports the module that owns the registry: a tiny
``sys.meta_path`` finder wraps that module's loader and calls the callbacks after the module body has run, i.e. before
any other verl module can look the registry up.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType

Callback = Callable[[ModuleType], None]

_PENDING: dict[str, list[Callback]] = {}
_LOCK = threading.RLock()


def _run_callbacks(name: str, module: ModuleType) -> None:
    """Pop and run the callbacks waiting for ``name``."""
    with _LOCK:
        callbacks = _PENDING.pop(name, [])
    for callback in callbacks:
        callback(module)


class _CallbackLoader(importlib.abc.Loader):
    """Delegates to the real loader and runs the pending callbacks once the module body has executed."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _run_callbacks(module.__name__, module)

    def __getattr__(self, item: str):
        # get_source / get_filename / is_package ... (inspect, linecache and pkgutil use them)
        return getattr(self._loader, item)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loader of a module that has callbacks waiting."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _PENDING:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _CallbackLoader(spec.loader)
                return spec
        return None


_FINDER = _PostImportFinder()


def when_imported(name: str, callback: Callback) -> None:
    """Call ``callback(module)`` right after ``name`` is imported; immediately if it already is."""
    with _LOCK:
        module = sys.modules.get(name)
        if module is None:
            _PENDING.setdefault(name, []).append(callback)
            if _FINDER not in sys.meta_path:
                sys.meta_path.insert(0, _FINDER)
            return
    callback(module)
