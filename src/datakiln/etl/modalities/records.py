"""Records: each row of the cache holds every field of one record.

A shard task reads its record units through their sources, resolves each field's value (a
column, an archive member, a key of a JSON member, a file a table names), fetches every
referenced byte range in a few batched reads, decodes each field with its codec, rejects a
record whole when a required field is missing, empty or undecodable (naming the record, the
field, the stage and the reason), and hands each codec the shard's surviving values for its jit
kernel. Optional fields get a validity mask ``<name>_valid`` instead of a rejection.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa

from datakiln.cache.fingerprint import content_hash, content_hash_file
from datakiln.errors import BakeError
from datakiln.etl.fields import get_codec
from datakiln.etl.fields.base import Context, Encoded, FieldError
from datakiln.etl.modalities.base import STREAM_BYTES, ShardOutput, Unit, decode_all
from datakiln.etl.spec import BakeSpec, FieldSpec, RecordParams
from datakiln.etl.task import ShardMarker, ShardPlan
from datakiln.readers.rejections import STAGE_FETCH, STAGE_PARSE, STAGE_VALIDATE, Rejection
from datakiln.readers.sources import (
    FileRef,
    MemberRef,
    Record,
    get_source,
    record_extensions,
    resolve_path,
)
from datakiln.readers.sources.archive import can_open_member, fetch_members, open_member
from datakiln.writers.zarr_region import FieldLayout

# Files fetched per batched read (bounds the bytes a task holds before decoding).
FETCH_BATCH = 256
# What a plan rejection's error type says about where the record failed.
_PLAN_STAGES = {"CsvParseError": STAGE_PARSE, "DuplicateKey": STAGE_PARSE}


@dataclass(slots=True)
class _Slot:
    """One field of one record on its way to the codec."""

    value: Any = None  # raw value, then bytes once fetched
    ref: MemberRef | FileRef | None = None
    subkey: str | None = None  # ``json.caption``: the key to take after parsing
    uri: str | None = None  # the file or member it came from
    digest: str | None = None
    hashed: bool = False  # its bytes are a file's or member's own: hash them when decoding
    size: int | None = None  # of a file read through at decode rather than fetched
    error: FieldError | None = None
    decoded: Any = None


def _lookup(values: Mapping[str, Any], field: FieldSpec) -> tuple[Any, str | None, bool]:
    """``(value, subkey, found)`` of the first of the field's columns the record has."""
    for column in field.columns:
        if column in values and values[column] is not None:
            return values[column], None, True
        head, _, key = column.partition(".")
        if key and values.get(head) is not None:
            return values[head], key, True
    return None, None, False


def _rejection(
    record: Record,
    uri: str,
    shard_id: int,
    stage: str,
    error_type: str,
    message: str,
    field: str | None,
) -> Rejection:
    return Rejection(
        uri=uri,
        stage=stage,
        error_type=error_type,
        message=message,
        position=record.position,
        shard=shard_id,
        record=record.key,
        field=field,
    )


class RecordsModality:
    """Records bakes: every field of a record in one row, each field baked by its codec."""

    name = "records"
    # Records carry several values each; the bake counts records, checked per shard here.
    one_sample_per_input = False
    local_scheduler = "processes"

    @property
    def extensions(self) -> tuple[str, ...]:
        return record_extensions()

    @property
    def worker_modules(self) -> tuple[str, ...]:
        return (
            "datakiln.etl.fields.image",
            "datakiln.etl.fields.text",
            "datakiln.etl.fields.audio",
            "datakiln.etl.kernels.image",
            "datakiln.etl.kernels.text",
            "datakiln.readers.image",
        )

    def plan_units(self, spec: BakeSpec, inputs: Sequence[Any]) -> list[Unit]:
        raise NotImplementedError("records bakes are planned by datakiln.etl.plan_records")

    def fields(
        self, spec: BakeSpec, generation: str, shard_rows: int, labelled: bool
    ) -> list[FieldLayout]:
        layouts = []
        for field in spec.fields.values():
            layouts += get_codec(field.modality).layouts(field, generation, shard_rows)
            if not field.required:
                path = f"{generation}/{field.name}_valid"
                layouts.append(
                    FieldLayout(f"{field.name}_valid", path, "bool", (), shard_rows, sharded=False)
                )
        return layouts

    def sample_bytes(self, spec: BakeSpec) -> int:
        return max(get_codec(f.modality).sample_bytes(f) for f in spec.fields.values())

    def transforms(self, spec: BakeSpec) -> dict[str, dict[str, Any] | None]:
        out: dict[str, dict[str, Any] | None] = {}
        for field in spec.fields.values():
            out.update(get_codec(field.modality).transforms(field))
        return out

    def manifest_entries(self, spec: BakeSpec) -> dict[str, Any]:
        """Each field's modality, column and codec identity (in the cache key too)."""
        return {
            "record_fields": {
                name: {
                    "modality": f.modality,
                    "column": f.column,
                    "required": f.required,
                    "identity": get_codec(f.modality).identity(f),
                }
                for name, f in spec.fields.items()
            }
        }

    def bake_shard(
        self,
        shard: ShardPlan,
        spec_params: Mapping[str, Any],
        source_options: Mapping[str, Any],
        timings: dict[str, float],
    ) -> ShardOutput:
        params = RecordParams.from_dict(spec_params)
        classes = spec_params.get("classes") or {}
        fields = list(params.fields.values())
        codecs = {f.name: get_codec(f.modality) for f in fields}
        contexts = {f.name: Context(classes=classes.get(f.name)) for f in fields}
        rejections: list[Rejection] = []
        t0 = time.perf_counter()

        records: list[tuple[Record, str]] = []  # (record, container uri)
        encodings: dict[str, str | None] = {}  # container -> codec it was detected in
        for unit in shard.units or ():
            result = get_source(unit.source).read(unit, source_options)
            encodings[unit.input.uri] = result.encoding
            for r in result.rejections:
                stage = _PLAN_STAGES.get(r.error_type, STAGE_FETCH)
                rec = Record(key=r.key, position=r.position, values={})
                rejections.append(
                    _rejection(
                        rec, unit.input.uri, shard.shard_id, stage, r.error_type, r.message, None
                    )
                )
            records += [(rec, unit.input.uri) for rec in result.records]

        slots = [
            {f.name: self._slot(rec, container, f, codecs[f.name].media) for f in fields}
            for rec, container in records
        ]
        # huge referenced files of codecs that decode from an open file: read through, later
        sizes = {r.uri: r.size for u in shard.units or () for r in u.refs}
        for name in (f.name for f in fields if getattr(codecs[f.name], "streams", False)):
            for row in slots:
                slot = row[name]
                if isinstance(slot.ref, FileRef):
                    size = sizes.get(slot.ref.uri, 0)
                elif isinstance(slot.ref, MemberRef) and can_open_member(slot.ref):
                    size = slot.ref.size
                else:
                    continue
                slot.size = size if size >= STREAM_BYTES else None
        bytes_in = sum(
            len(slot.value)  # media bytes embedded in the record (a Parquet struct, a column)
            if slot.hashed and slot.ref is None and slot.value is not None
            else slot.size or 0  # read through at decode
            for row in slots
            for slot in row.values()
        )
        # fields whose rows record the file or member their value came from
        sourced = {
            f.name
            for f in fields
            if codecs[f.name].media or any(r[f.name].ref is not None for r in slots)
        }
        timings["fetch"] = time.perf_counter() - t0

        def decode(item: tuple[_Slot, FieldSpec]) -> None:
            slot, field = item
            try:
                if slot.size is not None:  # read through, never held whole
                    slot.digest, slot.decoded = self._decode_open(
                        slot, field, codecs[field.name], contexts[field.name], source_options
                    )
                    return
                value = slot.value
                # in the decode threads: hashlib releases the GIL
                if (slot.ref is not None or slot.hashed) and isinstance(value, bytes):
                    slot.digest = content_hash(value)
                if slot.subkey is not None:
                    value = _subkey(value, slot.subkey)
                slot.decoded = codecs[field.name].decode(value, field, contexts[field.name])
            except FieldError as err:
                slot.error = err

        # Records are fetched, decoded and encoded a batch at a time where a codec bounds its
        # batches (audio: decoded clips are large), so a task holds two batches of decoded
        # values; else the whole shard is one batch.
        batch = min(getattr(codecs[f.name], "batch_rows", None) or len(slots) for f in fields)
        batch = max(batch, 1)
        kept: list[int] = []
        encoded: dict[str, Encoded] = {}
        valid: dict[str, list[bool]] = {f.name: [] for f in fields}
        # per field, in field order: the URI and hash of each value's file, a text's raw string
        columns: dict[str, dict[str, list[Any]]] = {f.name: {} for f in fields}
        for f in fields:
            if f.name in sourced:
                columns[f.name] = {f"{f.name}_uri": [], f"{f.name}_sha256": []}
            if f.modality == "text":
                columns[f.name][f.name] = []

        def prepare(rows: range) -> tuple[int, float]:
            """Fetch and decode one batch: the bytes fetched and the seconds fetching took."""
            started = time.perf_counter()
            got = self._fetch([slots[k] for k in rows], source_options)
            fetched = time.perf_counter()
            work = [
                (slot, field)
                for k in rows
                for field in fields
                if (slot := slots[k][field.name]).error is None
                and (slot.value is not None or slot.size is not None)
            ]
            decode_all(decode, work)
            return got, fetched - started

        batches = [range(a, min(a + batch, len(slots))) for a in range(0, len(slots), batch)]
        # The next batch is fetched and decoded while the kernel runs on this one (decoders,
        # hashing and the kernel release the GIL), as the audio bake does. A shard of one
        # batch runs in order, on this thread: a helper thread's allocations come from a malloc
        # arena of its own (a synchronous bake of the benchmark tars peaked 25-30 MB higher).
        with contextlib.ExitStack() as stack:
            ahead = stack.enter_context(ThreadPoolExecutor(1)) if len(batches) > 1 else None
            pending = ahead.submit(prepare, batches[0]) if ahead is not None else None
            for i, rows in enumerate(batches):
                t2 = time.perf_counter()
                got, fetch_s = prepare(rows) if pending is None else pending.result()
                t3 = time.perf_counter()
                bytes_in += got
                timings["fetch"] += fetch_s
                # the wait for this batch's decodes (the first batch's fetch too: less that)
                timings["decode"] += max(0.0, t3 - t2 - (fetch_s if i == 0 else 0.0))
                if ahead is not None and i + 1 < len(batches):
                    pending = ahead.submit(prepare, batches[i + 1])
                these = [
                    k for k in rows if self._keep(slots[k], records[k], fields, shard, rejections)
                ]
                for field in fields:
                    column = [slots[k][field.name] for k in these]
                    ok = [s.error is None for s in column]
                    valid[field.name] += ok
                    decoded = [s.decoded if v else None for s, v in zip(column, ok, strict=True)]
                    # the first batch's arrays are the shard's; later batches are copied into them
                    capacity = len(decoded) if field.name in encoded else shard.capacity
                    part = codecs[field.name].encode(decoded, field, capacity, contexts[field.name])
                    _append(encoded, field.name, part, len(kept))
                    own = columns[field.name]
                    if field.name in sourced:
                        pairs = list(zip(column, ok, strict=True))
                        own[f"{field.name}_uri"] += [s.uri if v else None for s, v in pairs]
                        own[f"{field.name}_sha256"] += [s.digest if v else None for s, v in pairs]
                    if field.modality == "text":
                        own[field.name] += [d.text if d is not None else None for d in decoded]
                kept += these
                for k in rows:  # done with this batch's bytes and decoded values
                    for slot in slots[k].values():
                        slot.value = slot.decoded = None
                timings["kernel"] += time.perf_counter() - t3
        for field in fields:  # no record to encode: the shard's arrays are all fill
            if field.name not in encoded:
                encoded[field.name] = codecs[field.name].encode(
                    [], field, shard.capacity, contexts[field.name]
                )
        if len(kept) + len(rejections) != shard.capacity:
            raise BakeError(
                f"shard {shard.shard_id} read {len(kept) + len(rejections)} records where its "
                f"plan held {shard.capacity}: an input changed during the bake; run the same "
                "command again"
            )

        n = len(kept)
        meta: dict[str, list[Any]] = {
            "source": [records[k][1] for k in kept],
            "position": [records[k][0].position for k in kept],
            "record": [records[k][0].key for k in kept],
        }
        if any(encodings.values()):  # a table in a legacy codec, detected
            meta["source_encoding"] = [encodings[records[k][1]] or "utf-8" for k in kept]
        arrays: dict[str, Any] = {}
        stats: dict[str, Any] = {"records": n, "fields": {}}
        shapes: list[list[Any]] = []
        for field in fields:
            whole = encoded[field.name]
            arrays.update(whole.arrays)
            if not field.required:
                mask = np.zeros(shard.capacity, bool)
                mask[:n] = valid[field.name]
                arrays[f"{field.name}_valid"] = mask
            meta.update(columns[field.name])
            meta.update(whole.meta)
            stats["fields"][field.name] = whole.stats
            if field.modality == "label" and "label_counts" not in stats:
                stats["label_counts"] = whole.stats["label_counts"]
            shapes += [[field.name, *s] for s in whole.kernel_shapes]
        return ShardOutput(
            rows=n,
            arrays=arrays,
            meta=pa.table(meta),
            rejections=rejections,
            bytes_in=bytes_in,
            stats=stats,
            extra={"kernel_shapes": shapes, "records": shard.capacity},
        )

    @staticmethod
    def _keep(
        row: dict[str, _Slot],
        record: tuple[Record, str],
        fields: Sequence[FieldSpec],
        shard: ShardPlan,
        rejections: list[Rejection],
    ) -> bool:
        """Whether a decoded record is baked.

        Else its rejection (the first required field that failed, named with its stage and
        reason) is added to ``rejections``.
        """
        rec, container = record
        failed = None
        for field in fields:
            slot = row[field.name]
            if slot.error is None and slot.decoded is None:
                slot.error = FieldError(
                    STAGE_PARSE if slot.value is None and slot.size is None else STAGE_VALIDATE,
                    "MissingField",
                    f"record has no value for column {field.column!r}",
                )
            if slot.error is not None and field.required and failed is None:
                failed = (field.name, slot.error)
        if failed is None:
            return True
        name, err = failed
        slot = row[name]
        where = f" ({slot.uri})" if slot.uri and slot.uri != container else ""
        rejections.append(
            _rejection(
                rec,
                container,
                shard.shard_id,
                err.stage,
                err.error_type,
                f"field {name!r}{where}: {err}",
                name,
            )
        )
        return False

    @staticmethod
    def _slot(record: Record, container: str, field: FieldSpec, media: bool) -> _Slot:
        value, subkey, found = _lookup(record.values, field)
        slot = _Slot(value=value, subkey=subkey)
        if not found:
            return slot
        if isinstance(value, MemberRef):
            slot.ref, slot.uri, slot.value = value, f"{value.uri}#{value.name}", None
        elif isinstance(value, FileRef):
            slot.ref, slot.uri, slot.value = value, value.uri, None
        elif media and subkey is None:
            if isinstance(value, Mapping):  # a Hugging Face {"bytes", "path"} struct
                if value.get("bytes"):
                    slot.value = bytes(value["bytes"])
                    slot.uri = value.get("path")
                    slot.hashed = True
                elif value.get("path"):
                    value = str(value["path"])
                else:
                    slot.value = None  # a null struct
                    return slot
            if isinstance(value, str) and value:
                uri = resolve_path(value, container)
                slot.ref, slot.uri, slot.value = FileRef(uri), uri, None
            elif isinstance(value, bytes | bytearray) and value:
                slot.value = bytes(value)
                slot.hashed = True
            elif isinstance(value, str | bytes | bytearray):
                slot.value = None  # empty
        elif isinstance(value, str | bytes) and not value and subkey is None:
            slot.value = None
        return slot

    @staticmethod
    def _decode_open(
        slot: _Slot,
        field: FieldSpec,
        codec: Any,
        context: Context,
        storage_options: Mapping[str, Any],
    ) -> tuple[str, Any]:
        """Content hash and decoded value of a huge file or member, read through while open."""
        ref = slot.ref
        try:
            if isinstance(ref, MemberRef):
                opened: Any = open_member(ref, storage_options)
            else:
                assert ref is not None
                fs, path = fsspec.core.url_to_fs(ref.uri, **dict(storage_options))
                opened = fs.open(path, "rb", block_size=4 << 20)
            with opened as f:
                digest = content_hash_file(f)
                f.seek(0)
                return digest, codec.decode(f, field, context)
        except (OSError, EOFError) as err:
            raise _fetch_error(slot, err) from err

    @staticmethod
    def _fetch(slots: list[dict[str, _Slot]], storage_options: Mapping[str, Any]) -> int:
        """Fetch every referenced file and member in batches; failures become field errors.

        Files to be read through at decode (``size`` set) are not fetched.
        """
        pending = [s for row in slots for s in row.values() if s.ref is not None and s.size is None]
        fetched: dict[Any, bytes | BaseException] = {}
        members = list({s.ref: None for s in pending if isinstance(s.ref, MemberRef)})
        for first in range(0, len(members), FETCH_BATCH):
            part = members[first : first + FETCH_BATCH]
            fetched.update(zip(part, fetch_members(part, storage_options), strict=True))
        files = list({s.ref: None for s in pending if isinstance(s.ref, FileRef)})
        for first in range(0, len(files), FETCH_BATCH):
            some = files[first : first + FETCH_BATCH]
            fetched.update(
                zip(some, _fetch_files([f.uri for f in some], storage_options), strict=True)
            )
        bytes_in = 0
        for slot in pending:
            data = fetched[slot.ref]
            if isinstance(data, BaseException):
                slot.error = _fetch_error(slot, data)
            elif not data:
                slot.error = FieldError(STAGE_VALIDATE, "EmptyFile", f"{slot.uri} is empty")
            else:
                slot.value = data
                bytes_in += len(data)
        return bytes_in

    def merge_stats(self, spec: BakeSpec, markers: Sequence[ShardMarker]) -> dict[str, Any]:
        out: dict[str, Any] = {"records": sum(m.stats.get("records", 0) for m in markers)}
        for name, field in spec.fields.items():
            per_shard = [m.stats["fields"][name] for m in markers if m.stats.get("fields")]
            out[name] = get_codec(field.modality).merge_stats(field, per_shard)
        return out


def _append(encoded: dict[str, Encoded], name: str, part: Encoded, row: int) -> None:
    """Add a batch's encoding of field ``name`` to the shard's, its rows from ``row`` on.

    The first batch's arrays have the shard's capacity (and the codec's fill); a later one's
    rows are copied into them, its meta columns and kernel shapes appended, its stats added
    (codecs' shard stats are sums: numbers and lists of numbers).
    """
    if name not in encoded:
        encoded[name] = part
        return
    shard = encoded[name]
    for key, values in part.arrays.items():  # a later batch's arrays hold its rows only
        target = shard.arrays[key]
        if isinstance(target, list):
            target[row : row + len(values)] = list(values)
        else:
            target[row : row + len(values)] = np.asarray(values)
    for key, values in part.meta.items():
        shard.meta[key] = list(shard.meta[key]) + list(values)
    shard.stats = _add_stats(shard.stats, part.stats)
    shard.kernel_shapes += [s for s in part.kernel_shapes if s not in shard.kernel_shapes]


def _add_stats(a: Any, b: Any) -> Any:
    """``a + b`` for shard stats: numbers add, lists add item by item, dicts key by key."""
    if isinstance(a, Mapping):
        return {k: _add_stats(a[k], b[k]) if k in b else a[k] for k in a} | {
            k: v for k, v in b.items() if k not in a
        }
    if isinstance(a, list):
        width = max(len(a), len(b))
        a, b = a + [0] * (width - len(a)), b + [0] * (width - len(b))
        return [_add_stats(x, y) for x, y in zip(a, b, strict=True)]
    if a is None or b is None:
        return a if b is None else b
    return a + b


def _fetch_error(slot: _Slot, err: BaseException) -> FieldError:
    """The field error of a referenced file or member that could not be read."""
    message = str(err) or type(err).__name__
    if isinstance(err, FileNotFoundError):
        message = f"referenced file {slot.uri} does not exist"
    return FieldError(STAGE_FETCH, type(err).__name__, message)


def _subkey(value: Any, key: str) -> Any:
    """``value[key]`` of a JSON member's bytes, a JSON string or a struct; raises FieldError."""
    if isinstance(value, bytes | bytearray | str):
        try:
            value = json.loads(value)
        except ValueError as err:
            raise FieldError(STAGE_PARSE, "JSONDecodeError", f"not JSON: {err}") from err
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise FieldError(STAGE_PARSE, "MissingField", f"no key {key!r}")
        value = value[part]
    if value is None:
        raise FieldError(STAGE_PARSE, "MissingField", f"key {key!r} is null")
    return value


def _fetch_files(
    uris: list[str], storage_options: Mapping[str, Any]
) -> list[bytes | BaseException]:
    """The bytes of each file, or the error reading it (one batched ``cat`` per store)."""
    out: list[bytes | BaseException] = [b""] * len(uris)
    by_protocol: dict[str, list[int]] = {}
    for k, uri in enumerate(uris):
        by_protocol.setdefault(uri.split("://", 1)[0] if "://" in uri else "file", []).append(k)
    for index in by_protocol.values():
        fs, _ = fsspec.core.url_to_fs(uris[index[0]], **dict(storage_options))
        paths = [fs._strip_protocol(uris[k]) for k in index]
        got = fs.cat(paths, on_error="return")
        if not isinstance(got, dict):
            got = {paths[0]: got}
        for k, p in zip(index, paths, strict=True):
            out[k] = got.get(p, FileNotFoundError(p))
    return out


MODALITY = RecordsModality()
