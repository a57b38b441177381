"""Planning a bake: list inputs, give them labels, cut them into shards, compute the cache key.

A plan is plain data: each ``ShardPlan`` becomes one Dask task and round-trips through JSON, so
a task never needs anything pickled beyond strings and numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from datakiln.cache.fingerprint import canonical_json, fingerprint
from datakiln.cache.layout import FORMAT_VERSION, generation_dir
from datakiln.etl.modalities import get_modality
from datakiln.etl.spec import BakeSpec
from datakiln.etl.task import ShardPlan
from datakiln.readers.listing import InputFile, list_inputs

if TYPE_CHECKING:
    from datakiln.etl.modalities.base import Unit

# Upper bound on the bytes of one Zarr shard object: big enough that a bake shard writes few
# objects, small enough that a writer holds it in memory comfortably.
MAX_ZARR_SHARD_BYTES = 64 * 2**20
# Inputs serialised per step when hashing a listing into the cache key.
_KEY_SLICE = 8192
# JSON's own string escaping, as canonical_json applies it (ASCII only).
_json_string = json.encoder.encode_basestring_ascii


@dataclass(frozen=True, slots=True)
class PreviousBake:
    """What the committed manifest of the same generation holds, for an incremental plan."""

    version: int
    cache_key: str
    shards: tuple[ShardPlan, ...]
    class_names: tuple[str, ...] | None
    rows: int
    next_shard_id: int
    label_classes: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InputChanges:
    """How the input listing differs from the committed one.

    ``examples``: a few of the changed, new or removed files, named.
    """

    new: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    examples: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BakePlan:
    """The live shards of the next version, and which of them still need baking.

    Within a generation a plan is append-only: shards of the previous version whose inputs are
    unchanged are kept as they are; a shard with a changed or removed input is retired, and its
    remaining inputs are baked again, with the new and changed ones, into new shards appended
    after every row written so far. Nothing a committed manifest references is rewritten.
    """

    spec: BakeSpec
    inputs: tuple[InputFile, ...]
    class_names: tuple[str, ...] | None
    generation_key: str
    shards: tuple[ShardPlan, ...]
    pending: frozenset[int]
    retired: tuple[int, ...]
    cache_key: str
    zarr_shard_rows: int
    rows: int
    next_shard_id: int
    changes: InputChanges
    previous: PreviousBake | None
    # Records bakes: the class names of each label field, in id order.
    label_classes: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    @property
    def generation(self) -> str:
        return generation_dir(self.generation_key)


def parent_label(uri: str) -> str:
    """The class name of an input under the ``parent`` label source: its folder's name."""
    return posixpath.basename(posixpath.dirname(uri.split("://", 1)[-1]))


def spec_shard_size(spec: BakeSpec) -> int:
    """``spec.shard_size``, which ``BakeSpec`` sets to its modality's default when not given."""
    if spec.shard_size is None:  # not after BakeSpec.__post_init__
        raise ValueError("BakeSpec.shard_size was not resolved")
    return spec.shard_size


def zarr_shard_rows(shard_size: int, sample_bytes: int) -> int:
    """Rows per Zarr shard object: ``shard_size`` halved until one object fits the budget.

    Always divides ``shard_size``, so a bake shard covers whole Zarr shards and no two tasks
    ever write the same object.
    """
    rows = shard_size
    while rows % 2 == 0 and rows * sample_bytes > MAX_ZARR_SHARD_BYTES:
        rows //= 2
    return rows


def generation_key(spec: BakeSpec) -> str:
    """Hash of the format version and the preprocessing parameters (not the inputs).

    A modality whose stored bytes depend on more than its parameters (the text tokenizer's
    hash and rules) adds that identity through ``manifest_entries``; it goes into the key too.
    """
    payload: dict[str, Any] = {"format_version": FORMAT_VERSION, "spec": spec.key_dict()}
    entries = getattr(get_modality(spec.modality), "manifest_entries", None)
    identity = entries(spec) if entries is not None else {}
    if identity:  # images have none, so their keys stay what they were
        payload["identity"] = identity
    return fingerprint(payload)


def cache_key(spec: BakeSpec, inputs: tuple[InputFile, ...]) -> str:
    """Hash of the format version, the preprocessing spec and the input listing.

    The fingerprint of ``{"generation": ..., "inputs": [...]}``, hashed a slice of inputs at
    a time: the same digest without the whole listing as dicts and one JSON string in memory
    (for a million inputs those took ~0.4 GB at the planner's peak).
    """
    digest = hashlib.sha256(b'{"generation":' + canonical_json(generation_key(spec)))
    digest.update(b',"inputs":[')
    for start in range(0, len(inputs), _KEY_SLICE):
        if start:
            digest.update(b",")
        digest.update(",".join(map(_input_json, inputs[start : start + _KEY_SLICE])).encode())
    digest.update(b"]}")
    return digest.hexdigest()


def _input_json(item: InputFile) -> str:
    """``canonical_json(item.to_dict())``, written directly (a third of the time)."""
    uri, version = _json_string(item.uri), _json_string(item.version)
    return f'{{"size":{int(item.size)},"uri":{uri},"version":{version}}}'


def plan_shards(
    spec: BakeSpec, inputs: tuple[InputFile, ...], previous: PreviousBake | None
) -> BakePlan:
    """Pure planning: the next version's shards from the listing and the committed version."""
    current = {i.uri: i for i in inputs}
    kept: list[ShardPlan] = []
    retired: list[int] = []
    todo: list[InputFile] = []
    known: set[str] = set()
    changed: set[str] = set()
    for shard in previous.shards if previous else ():
        same = True
        for old in shard.inputs:  # one look-up per input: a million inputs is a hot loop
            known.add(old.uri)
            now = current.get(old.uri)
            if now is None:
                same = False
            elif now.size != old.size or now.version != old.version:
                changed.add(old.uri)
                same = False
        if same:
            kept.append(shard)
        else:
            retired.append(shard.shard_id)
            todo.extend(current[i.uri] for i in shard.inputs if i.uri in current)
    new = [i for i in inputs if i.uri not in known]
    # a file split over several retired shards is listed once and planned again whole
    todo = sorted({i.uri: i for i in todo + new}.values(), key=lambda i: i.uri)
    changes = InputChanges(
        new=len(new),
        changed=len(changed),
        removed=len(known - current.keys()),
        unchanged=len(inputs) - len(new) - len(changed),
    )

    class_names: tuple[str, ...] | None = None
    index: dict[str, int] = {}
    if spec.modality == "image" and spec.image.labels == "parent":
        named = list(previous.class_names or ()) if previous else []
        added = sorted({parent_label(i.uri) for i in todo} - set(named))
        class_names = (*named, *added)
        index = {name: k for k, name in enumerate(class_names)}

    modality = get_modality(spec.modality)
    shard_size = spec_shard_size(spec)
    shard_rows = zarr_shard_rows(shard_size, modality.sample_bytes(spec))
    units = modality.plan_units(spec, todo)
    row = -(-previous.rows // shard_rows) * shard_rows if previous else 0
    next_id = previous.next_shard_id if previous else 0
    fresh: list[ShardPlan] = []
    group: list[Unit] = []

    def close_group() -> None:
        nonlocal row, next_id
        capacity = sum(u.capacity for u in group)
        labels = tuple(index[parent_label(u.input.uri)] for u in group) if class_names else None
        ranges = tuple(u.span for u in group) if any(u.start is not None for u in group) else None
        encodings = tuple(u.encoding for u in group) if any(u.encoding for u in group) else None
        fresh.append(
            ShardPlan(
                shard_id=next_id,
                row_start=row,
                capacity=capacity,
                inputs=tuple(u.input for u in group),
                labels=labels,
                ranges=ranges,
                encodings=encodings,
            )
        )
        next_id += 1
        # the next shard starts on a Zarr shard boundary, so no object is shared
        row += -(-capacity // shard_rows) * shard_rows
        group.clear()

    filled = 0  # capacity of the open group
    for unit in units:
        if group and filled + unit.capacity > shard_size:
            close_group()
            filled = 0
        group.append(unit)
        filled += unit.capacity
    if group:
        close_group()
    rows = max([previous.rows if previous else 0] + [s.row_start + s.capacity for s in fresh])
    return BakePlan(
        spec=spec,
        inputs=inputs,
        class_names=class_names,
        generation_key=generation_key(spec),
        shards=(*kept, *fresh),
        pending=frozenset(s.shard_id for s in fresh),
        retired=tuple(retired),
        cache_key=cache_key(spec, inputs),
        zarr_shard_rows=shard_rows,
        rows=rows,
        next_shard_id=next_id,
        changes=changes,
        previous=previous,
    )


def list_files(spec: BakeSpec) -> tuple[InputFile, ...]:
    """The input files of a single-modality ``spec`` as listed now (raises ``SourceError``)."""
    extensions = get_modality(spec.modality).extensions
    return tuple(list_inputs(spec.sources, spec.source_options, extensions=extensions))


def plan_files(
    spec: BakeSpec,
    previous: PreviousBake | None = None,
    *,
    inputs: tuple[InputFile, ...] | None = None,
) -> BakePlan:
    """List the input files of a single-modality ``spec`` and plan the next version.

    ``inputs``, when given, are the files (already listed); listing raises ``SourceError``.
    Records bakes are planned by ``datakiln.etl.plan_records``.
    """
    return plan_shards(spec, list_files(spec) if inputs is None else inputs, previous)
