"""The user's own functions in a bake: name them, import them, and key them by their code.

A transform or filter is named ``"package.module:function"``. Its identity, which goes into
the cache key, is that name, a hash of the function's source and of its module's source, the
user's ``version`` and the ``params``; so an edit to the code bakes a new generation, and a
moved module or a changed closure never silently reuses the old cache. Nothing is pickled: a
function whose source cannot be read (a lambda, a closure, a function typed at the prompt) is
refused, since its code could not be keyed.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from datakiln.errors import SpecError

__all__ = ["UserFunction", "code_identity", "import_function"]


def _hash(text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:16]


# The source hash of each user module as this process loaded it.
_LOADED: dict[str, str] = {}


def _source_file_hash(module: Any) -> str | None:
    path = getattr(module, "__file__", None)
    if not isinstance(path, str):  # a namespace package or a built-in module
        return None
    try:
        with open(path, "rb") as f:
            return _hash(f.read())
    except OSError:
        return None


def _fresh_module(name: str) -> Any:
    """The module ``name``, reloaded if its file changed since this process loaded it.

    So the code that runs is the code whose hash keys the cache.
    """
    module = sys.modules.get(name)
    if module is None:
        importlib.invalidate_caches()  # a module written since the last import
        module = importlib.import_module(name)
        _LOADED[name] = _source_file_hash(module) or ""
        return module
    now = _source_file_hash(module)
    seen = _LOADED.setdefault(name, now or "")
    if now is not None and now != seen:
        module = importlib.reload(module)
        _LOADED[name] = now
    return module


def import_function(ref: str) -> Callable[..., Any]:
    """The function ``ref`` (``"module:function"``) names; ``SpecError`` saying why not."""
    module_name, sep, name = ref.partition(":")
    if not sep or not module_name or not name:
        raise SpecError(f"a function is named 'package.module:function'; got {ref!r}")
    try:
        module = _fresh_module(module_name)
    except ImportError as err:
        raise SpecError(
            f"cannot import {module_name!r} for {ref}: {type(err).__name__}: {err}; install it "
            "or put its folder on PYTHONPATH where the bake runs"
        ) from err
    target: object = module
    for part in name.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise SpecError(f"module {module_name!r} has no function {name!r} (for {ref})")
    if not callable(target):
        raise SpecError(f"{ref} is not a function")
    return target


def reference_of(fn: Callable[..., Any]) -> str:
    """``"module:function"`` for a module-level function; ``SpecError`` for anything else.

    A lambda, a closure or a function of ``__main__`` has no name a worker could import, and
    its captured values have no source to hash: it is refused rather than keyed by pickle.
    """
    qualname = getattr(fn, "__qualname__", None)
    module = getattr(fn, "__module__", None)
    shown = getattr(fn, "__name__", repr(fn))
    if not inspect.isfunction(fn) or qualname is None or module is None:
        raise SpecError(
            f"{shown!r} is not a plain function; name a module-level function as "
            "'package.module:function'"
        )
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise SpecError(
            f"{qualname} is a lambda or closure: its code and captured values cannot be keyed "
            "without pickling; define it at the top level of a module and pass params instead"
        )
    if module == "__main__":
        raise SpecError(
            f"{qualname} is defined in __main__, which bake workers cannot import; move it into "
            "a module (and its folder onto PYTHONPATH)"
        )
    ref = f"{module}:{qualname}"
    if import_function(ref) is not fn:
        raise SpecError(f"{ref} does not name the function passed; pass the module's function")
    return ref


def code_identity(ref: str) -> dict[str, str]:
    """Hashes of the source of the function ``ref`` names and of its module's source."""
    fn = import_function(ref)
    module = sys.modules[ref.partition(":")[0]]
    try:
        source = inspect.getsource(fn)
        module_source = inspect.getsource(module)
    except (OSError, TypeError) as err:
        raise SpecError(
            f"cannot read the source of {ref} ({err}); the cache key needs it: use a function "
            "defined in a .py file"
        ) from err
    return {"source": _hash(source), "module": _hash(module_source)}


def _check_params(ref: str, params: Any) -> dict[str, Any]:
    if not isinstance(params, Mapping):
        raise SpecError(f"params of {ref} must be a table of keyword arguments")
    try:
        json.dumps(params, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise SpecError(
            f"params of {ref} must be plain TOML/JSON values (numbers, strings, lists, "
            f"tables): {err}"
        ) from None
    return dict(params)


@dataclass(frozen=True, kw_only=True)
class UserFunction:
    """A user function of a bake step.

    ``function`` names it, ``params`` are keyword arguments it is called with, ``version`` is
    the user's way to force a new key.
    """

    function: str
    version: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if callable(self.function):
            object.__setattr__(self, "function", reference_of(self.function))
        if not isinstance(self.function, str):
            raise SpecError(f"function must be 'package.module:function'; got {self.function!r}")
        if self.version is not None:
            object.__setattr__(self, "version", str(self.version))
        object.__setattr__(self, "params", _check_params(self.function, self.params))

    def to_dict(self) -> dict[str, Any]:
        return {"function": self.function, "version": self.version, "params": dict(self.params)}

    def key_dict(self) -> dict[str, Any]:
        """What the cache key holds of this function: its name, code, version and params."""
        return {**self.to_dict(), **code_identity(self.function)}

    def load(self) -> Callable[..., Any]:
        return import_function(self.function)


def worker_identities(refs: list[str]) -> dict[str, Any]:
    """Run on each worker of a cluster: the code identity of each function it can import.

    Or, for a function it cannot import, the error importing it gave (a string).
    """
    out: dict[str, Any] = {}
    for ref in refs:
        try:
            out[ref] = code_identity(ref)
        except Exception as err:  # reported to the driver as one line
            out[ref] = f"{type(err).__name__}: {err}"
    return out


def module_archive(module_name: str, folder: str) -> str | None:
    """A file ``Client.upload_file`` can ship for the module; ``None`` when there is none.

    The ``.py`` file of a top-level module, or a ``.zip`` of the top-level package that
    holds it.
    """
    import os
    import zipfile

    top = module_name.split(".")[0]
    module = sys.modules.get(top) or importlib.import_module(top)
    path = getattr(module, "__file__", None)
    if path is None:
        return None
    if not path.endswith("__init__.py"):
        return path if path.endswith(".py") else None
    package_dir = os.path.dirname(path)
    archive = os.path.join(folder, f"{top}.zip")
    with zipfile.ZipFile(archive, "w") as z:
        for root, dirs, files in os.walk(package_dir):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                if name.endswith(".py"):
                    full = os.path.join(root, name)
                    z.write(full, os.path.relpath(full, os.path.dirname(package_dir)))
    return archive
