"""``ensure(spec)``: the URL of an up-to-date cache, baked once however many processes ask.

No service needed: the store lease serialises the callers. The first to take the lease bakes;
each other one waits for the lease, then finds the cache up to date (same cache key) and
returns at once. Without ``output`` the cache goes to ``<root>/<cache key>``, so every caller
with the same spec and inputs lands on the same URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from datakiln.errors import SpecError

# How long a caller waits for another process's bake of the same store (seconds).
DEFAULT_WAIT_S = 24 * 3600.0


def _spec(spec: Any, root: str | None) -> Any:
    from datakiln.etl.spec import BakeSpec

    if isinstance(spec, BakeSpec):
        return spec
    if not isinstance(spec, Mapping):
        raise SpecError(f"spec must be a BakeSpec or a table of its fields; got {spec!r}")
    values = dict(spec)
    if "output" in values:
        return BakeSpec.from_dict(values)
    if root is None:
        raise SpecError("a spec without 'output' needs root=: the cache goes to <root>/<key>")
    placeholder = BakeSpec.from_dict({**values, "output": f"{root.rstrip('/')}/_unnamed"})
    from datakiln.service.specs import listed_cache_key

    key = listed_cache_key(placeholder)
    return BakeSpec.from_dict({**values, "output": f"{root.rstrip('/')}/{key}"})


def ensure_report(
    spec: Any,
    *,
    root: str | None = None,
    wait_s: float = DEFAULT_WAIT_S,
    jax_cache_dir: str | None = None,
) -> Any:
    """Like ``ensure``, returning the ``BakeReport`` (``up_to_date`` when nothing was baked)."""
    from datakiln.etl.bake import bake

    return bake(_spec(spec, root), lease_wait_s=wait_s, jax_cache_dir=jax_cache_dir)


def ensure(
    spec: Any,
    *,
    root: str | None = None,
    wait_s: float = DEFAULT_WAIT_S,
    jax_cache_dir: str | None = None,
) -> str:
    """Bake ``spec`` unless its cache is up to date; return the cache's URL.

    Args:
        spec: a ``BakeSpec``, or a table of its fields (``output`` optional with ``root``).
        root: where a spec without ``output`` goes: ``<root>/<cache key>``.
        wait_s: how long to wait while another process bakes the same store.
        jax_cache_dir: a persistent JAX compilation cache for the bake's workers to share.

    Raises:
        LeaseHeldError: another bake still held the store after ``wait_s``.
        SpecError, SourceError, OutputError, BakeError: as ``bake``.
    """
    url: str = ensure_report(spec, root=root, wait_s=wait_s, jax_cache_dir=jax_cache_dir).url
    return url
