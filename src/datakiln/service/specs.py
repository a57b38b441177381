"""Turning a submitted spec into a bake the service may run: where it goes, what it reads.

A job's spec is the TOML spec's table as JSON. The service decides the rest: the cache goes
to ``<root>/<name>`` (``output`` is a cache name under the root; without one, the cache key
names it), sources must lie under an allowed prefix, and the scheduler is the service's own.
Every refusal is a ``SpecError`` with one line saying what to change, as the CLI gives.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec

from datakiln.errors import SpecError

# Cache names: path segments of letters, digits and ``._-``, none of them ``.`` or ``..``.
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_MAX_NAME = 200


def check_cache_name(name: str) -> str:
    """``name`` if it is a plain relative cache name (``pets`` or ``team/pets64``), else raise.

    Refuses absolute paths, URLs, ``..`` and anything but ``[A-Za-z0-9._-]`` segments, so a
    name can never reach outside the service's root.
    """
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME:
        raise SpecError(f"cache name must be 1 to {_MAX_NAME} characters; got {name!r}")
    if name.startswith(("/", "\\")) or "://" in name:
        raise SpecError(f"cache name {name!r} must be relative to the service root, not absolute")
    parts = name.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise SpecError(f"cache name {name!r} may not contain empty, '.' or '..' segments")
        if not _SEGMENT.match(part):
            raise SpecError(
                f"cache name {name!r}: segment {part!r} may hold only letters, digits, '.', "
                "'_' and '-'"
            )
    return name


def _protocol(url: str) -> str:
    protocol = fsspec.core.split_protocol(url)[0]
    return "file" if protocol in (None, "file", "local") else protocol


def _normal(url: str) -> str:
    """``url`` with ``.``/``..`` folded and local paths absolute, for prefix comparisons."""
    protocol, path = fsspec.core.split_protocol(url)
    if _protocol(url) == "file":
        return posixpath.normpath(posixpath.join("/", path)) if path.startswith("/") else ""
    return f"{protocol}://{posixpath.normpath('/' + path).lstrip('/')}"


def _under(url: str, prefix: str) -> bool:
    url, prefix = _normal(url), _normal(prefix).rstrip("/")
    return bool(url) and bool(prefix) and (url == prefix or url.startswith(prefix + "/"))


@dataclass(frozen=True, kw_only=True)
class SourcePolicy:
    """Which sources a job may read.

    ``allow_prefixes`` (``--allow-source``) lists URL or path prefixes; ``root`` is the
    service's cache root, whose whole filesystem is allowed too (its protocol: the local disk
    for a local root, the object store for ``s3://…``), unless ``root_filesystem`` is off.
    Local sources must be absolute paths.
    """

    root: str
    allow_prefixes: tuple[str, ...] = ()
    root_filesystem: bool = True

    def check(self, sources: Sequence[str]) -> None:
        for source in sources:
            if not isinstance(source, str):
                raise SpecError(f"sources must be strings; got {source!r}")
            if _protocol(source) == "file" and not fsspec.core.split_protocol(source)[1].startswith(
                "/"
            ):
                raise SpecError(f"source {source!r} must be an absolute path or a URL")
            if ".." in source.split("/"):
                raise SpecError(f"source {source!r} may not contain '..'")
            if self.root_filesystem and _protocol(source) == _protocol(self.root):
                continue
            if any(_under(source, prefix) for prefix in self.allow_prefixes):
                continue
            allowed = [f"the {_protocol(self.root)} filesystem"] if self.root_filesystem else []
            allowed += list(self.allow_prefixes)
            raise SpecError(
                f"source {source!r} is outside the allowed prefixes ({', '.join(allowed)}); "
                "start the service with --allow-source PREFIX to allow it"
            )


def cache_url(root: str, name: str) -> str:
    """The URL of cache ``name`` under ``root``."""
    return f"{root.rstrip('/')}/{check_cache_name(name)}"


def job_spec(
    data: Any,
    *,
    root: str,
    policy: SourcePolicy,
    scheduler: str,
    workers: int | None,
) -> tuple[Any, str | None]:
    """Check a submitted spec table; return the ``BakeSpec`` and its cache name, if it has one.

    Without ``output`` the spec's output is a placeholder the caller replaces with
    ``<root>/<cache key>`` once the inputs are listed.
    """
    from datakiln.etl.spec import BakeSpec

    if not isinstance(data, Mapping):
        raise SpecError("the job's spec must be a table (a JSON object) of the bake spec's fields")
    values = dict(data)
    for name in ("scheduler", "workers"):
        if name in values:
            raise SpecError(f"{name!r} is the service's to choose; leave it out of the job spec")
    name = values.pop("output", None)
    if name is not None:
        check_cache_name(name)
    sources = values.get("sources")
    if isinstance(sources, str):
        values["sources"] = sources = [sources]
    if isinstance(sources, list):
        policy.check(sources)
    values["output"] = cache_url(root, name or "_unnamed")
    values["scheduler"] = scheduler
    values["workers"] = workers
    return BakeSpec.from_dict(values), name


def listed_cache_key(spec: Any) -> str:
    """The cache key of ``spec`` over its inputs as listed now (raises ``SourceError``).

    The planner's own key, so it is the key ``bake`` will commit (any modality).
    """
    from datakiln.etl.bake import listed_cache_key as planned_key

    return planned_key(spec)
