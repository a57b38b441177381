"""Mixtures: one dataset that draws from several by weight, deterministically.

Positions of a mixture form an endless stream cut into *windows* of ``window`` positions.
Each window holds exactly ``counts[i]`` samples of source ``i``: the weights times the window,
rounded by largest remainder, so the composition of every window is exact. Where in the
window each source's samples sit is a permutation drawn from ``(seed, window number)``, and the
``k``-th sample drawn from source ``i`` is position ``k mod len(i)`` of that source's own
shuffled order for pass ``k // len(i)``: every sample of a source is drawn once before any is
drawn again. All of it is a pure function of the position, so a ``Loader`` over a mixture
resumes (elastically too) like one over a single dataset. With ``window`` equal to the global
batch, every global batch has exactly the same composition.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from datakiln.datasets.base import BaseDataset, read_indices
from datakiln.errors import SpecError

_STREAM_SLOTS = 3


def _derived_seed(seed: int, *tags: int) -> int:
    words = np.random.SeedSequence([seed, *tags]).generate_state(2, np.uint32)
    return int(words[0]) << 31 | int(words[1]) >> 1


def window_counts(weights: Sequence[float], window: int) -> np.ndarray:
    """Samples of each source per window: ``weights * window`` by largest remainder."""
    quotas = np.asarray(weights, dtype=np.float64) * window
    counts = np.floor(quotas).astype(np.int64)
    short = window - int(counts.sum())
    # ties go to the earlier source: a stable sort of the negated remainders
    for i in np.argsort(-(quotas - counts), kind="stable")[:short]:
        counts[i] += 1
    return counts


class Mixture(BaseDataset):
    """Samples of several datasets in proportions, as one dataset (see module doc).

    Args:
        sources: ``{dataset: weight}`` (or ``[(dataset, weight), ...]``); weights > 0, any scale.
        seed: Non-negative seed of the mixture's order.
        window: Positions over which each source's count is exact (default 256; use the
            global batch for exact per-batch composition).
        fields: Batch fields to keep; required when the sources' fields differ.
        length: Positions per epoch (default: the sources' total length).

    Batches hold the kept fields plus ``indices`` (mixture positions), ``sources`` (int32:
    which dataset) and ``source_indices`` (int64: the index within it).
    """

    def __init__(
        self,
        sources: Mapping[Any, float] | Sequence[tuple[Any, float]],
        *,
        seed: int = 0,
        window: int = 256,
        fields: Sequence[str] | None = None,
        length: int | None = None,
    ) -> None:
        super().__init__(None, "train")
        pairs = list(sources.items() if isinstance(sources, Mapping) else sources)
        if not pairs:
            raise SpecError("a mixture needs at least one dataset")
        for name, value in (("seed", seed), ("window", window)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (name == "window"):
                raise SpecError(f"Mixture {name} must be a non-negative integer, got {value!r}")
        weights = np.array([float(w) for _, w in pairs])
        if not np.all(np.isfinite(weights)) or (weights <= 0).any():
            raise SpecError(f"mixture weights must be positive numbers, got {weights.tolist()}")
        self.datasets = [d for d, _ in pairs]
        for d in self.datasets:
            if len(d) == 0:
                raise SpecError(f"cannot mix {type(d).__name__}: it has no samples")
        self.weights = (weights / weights.sum()).tolist()
        self.seed, self.window = int(seed), int(window)
        self.counts = window_counts(self.weights, self.window)
        self.fields = self._check_fields(fields)
        self._lengths = [len(d) for d in self.datasets]
        self._length = int(length if length is not None else sum(self._lengths))
        self._seeds = [_derived_seed(self.seed, i) for i in range(len(self.datasets))]

    def _check_fields(self, fields: Sequence[str] | None) -> tuple[str, ...]:
        found = [set(read_indices(d, [0], purpose="mix it")) - {"indices"} for d in self.datasets]
        if fields is None:
            if any(f != found[0] for f in found):
                listing = "; ".join(f"{i}: {sorted(f)}" for i, f in enumerate(found))
                raise SpecError(
                    f"cannot mix datasets with different fields ({listing}); name the fields "
                    "to keep with fields=[...]"
                )
            return tuple(sorted(found[0]))
        missing = [(i, sorted(set(fields) - f)) for i, f in enumerate(found) if set(fields) - f]
        if missing:
            raise SpecError(f"mixture fields {list(fields)} are missing from sources {missing}")
        return tuple(fields)

    def __len__(self) -> int:
        return self._length

    @property
    def identity(self) -> str:
        """What fixes the mixture's stream: a ``Loader`` state of another one is refused."""
        from datakiln.cache.fingerprint import fingerprint

        return "mixture:" + fingerprint(
            {
                "seed": self.seed,
                "window": self.window,
                "counts": self.counts.tolist(),
                "fields": list(self.fields),
                "length": self._length,
                "sources": [
                    getattr(d, "identity", None) or [type(d).__name__, len(d)]
                    for d in self.datasets
                ],
            }
        )

    def stream_order(self, epoch: int) -> np.ndarray:
        """Positions of ``epoch``: the next ``len(self)`` of the stream.

        The mixture is already shuffled; a ``Loader`` reads them in this order.
        """
        return np.arange(epoch * self._length, (epoch + 1) * self._length, dtype=np.int64)

    def check_indices(self, indices: Any) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if (idx < 0).any():
            raise IndexError("mixture positions are non-negative")
        return idx

    @functools.lru_cache(maxsize=64)  # noqa: B019  (a few windows, for the object's life)
    def _window(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Source of each slot of window ``k`` and the slot's rank among that source's."""
        slots = np.repeat(np.arange(len(self.counts)), self.counts)
        bits = np.random.PCG64(np.random.SeedSequence([self.seed, k, _STREAM_SLOTS]))
        slots = slots[np.argsort(bits.random_raw(self.window), kind="stable")]
        order = np.argsort(slots, kind="stable")
        firsts = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
        ranks = np.empty(self.window, dtype=np.int64)
        ranks[order] = np.arange(self.window) - np.repeat(firsts, self.counts)
        return slots, ranks

    @functools.lru_cache(maxsize=8)  # noqa: B019
    def _pass_order(self, source: int, epoch: int) -> np.ndarray:
        from datakiln.datasets.loader import epoch_order

        return epoch_order(self._lengths[source], seed=self._seeds[source], epoch=epoch)

    def locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(source, index in it)`` of each mixture position."""
        positions = np.asarray(positions, dtype=np.int64)
        sources = np.empty(len(positions), dtype=np.int32)
        draws = np.empty(len(positions), dtype=np.int64)
        windows = positions // self.window
        for k in np.unique(windows).tolist():
            where = np.flatnonzero(windows == k)
            slots, ranks = self._window(k)
            offsets = positions[where] - k * self.window
            sources[where] = slots[offsets]
            draws[where] = k * self.counts[slots[offsets]] + ranks[offsets]
        indices = np.empty(len(positions), dtype=np.int64)
        for s in np.unique(sources).tolist():
            where = np.flatnonzero(sources == s)
            passes, within = np.divmod(draws[where], self._lengths[s])
            for p in np.unique(passes).tolist():
                mask = passes == p
                indices[where[mask]] = self._pass_order(s, p)[within[mask]]
        return sources, indices

    def read_batch(self, indices: np.ndarray) -> dict[str, Any]:
        positions = np.asarray(indices, dtype=np.int64)
        sources, within = self.locate(positions)
        size = len(positions)
        out: dict[str, Any] = {}
        for s in np.unique(sources).tolist():
            where = np.flatnonzero(sources == s)
            batch = read_indices(self.datasets[s], within[where], purpose="mix it")
            for name in self.fields:
                value = batch[name]
                if isinstance(value, list | tuple):
                    target = out.setdefault(name, [None] * size)
                    for row, item in zip(where.tolist(), value, strict=True):
                        target[row] = item
                    continue
                value = np.asarray(value)
                if name not in out:
                    out[name] = np.empty((size, *value.shape[1:]), value.dtype)
                elif out[name].shape[1:] != value.shape[1:]:
                    raise SpecError(
                        f"cannot mix field {name!r}: source {s} has rows of shape "
                        f"{value.shape[1:]}, another {out[name].shape[1:]}"
                    )
                out[name][where] = value
        out["indices"] = positions
        out["sources"] = sources
        out["source_indices"] = within
        return out


def mix(
    sources: Mapping[Any, float] | Sequence[tuple[Any, float]],
    *,
    seed: int = 0,
    window: int = 256,
    fields: Sequence[str] | None = None,
    length: int | None = None,
) -> Mixture:
    """``Mixture(sources, seed=..., ...)``: datasets drawn by weight (see :class:`Mixture`)."""
    return Mixture(sources, seed=seed, window=window, fields=fields, length=length)
