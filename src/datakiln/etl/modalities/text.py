"""Text: read byte ranges of line files (or Parquet row groups), tokenize a shard in one jit kernel.

Units are byte ranges of line-oriented files (``.txt``, ``.jsonl``, ``.csv``/``.tsv``) cut at
line starts, runs of Parquet row groups, or whole files (one sample per file). The planner
reads each line file once, in bounded blocks, to count its lines: a unit's capacity is that
count (an upper bound on its samples), and a range holding more than ``shard_size`` lines is cut
further, so a shard's memory is bounded by ``shard_size`` samples (Parquet: by its row groups).

Stored fields: ``text_tokens`` (N, max_length) in the smallest unsigned dtype that holds the
vocabulary, read as int32; ``text_lengths`` int32 (tokens before the padding, BOS and EOS
included); ``texts``, the decoded strings as a Zarr v3 variable-length string array, one
inner chunk per string in shard objects, so a batch reads just its own strings. The Parquet
meta part holds the text again with its source uri, position (byte offset of the line, or
Parquet row) and the codec it was decoded with.

With ``text.encoding = "auto"`` the planner detects each file's codec once, from a bounded
sample (``datakiln.readers.encoding``), and the shard plan carries it per input: it is part of
the shard's fingerprint, every range of a file is read with it, and a resumed bake reads as the
first one did. The detector's name and version are in the manifest and the cache key.

Samples, not files, are what a text bake counts: ``inputs = baked + rejected`` counts samples,
and every sample that is not baked (undecodable bytes, bad JSON, empty lines, ...) is in the
rejected table with its reason and position. Blank samples (reason ``EmptySample``) are also
counted apart (``blank`` in the counts and the report), since they are not broken input.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import time
import zlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from datakiln.errors import BakeError, SourceError, SpecError
from datakiln.etl.modalities.base import ShardOutput, Unit
from datakiln.etl.spec import TEXT_FORMATS, BakeSpec, TextBakeParams
from datakiln.etl.task import ShardMarker, ShardPlan
from datakiln.readers.encoding import AUTO_ENCODING, detector_identity
from datakiln.readers.listing import InputFile
from datakiln.readers.rejections import Rejection, redact_url
from datakiln.readers.text import (
    TEXT_EXTENSIONS,
    TextColumns,
    codec_name,
    detect_text_encoding,
    infer_text_format,
    parquet_row_counts,
    plan_text_ranges,
    read_text_columns,
    split_line_range,
)
from datakiln.writers.zarr_region import STRING_DTYPE, FieldLayout

# Ranges read concurrently per shard task (object stores: many small files per shard).
READ_THREADS = 4
# Files planned concurrently (each is read once, in blocks, to count its lines).
PLAN_THREADS = 4
# Ids below this are pad/unk/bos/eos (as in datakiln.etl.kernels.text).
NUM_SPECIAL_IDS = 4
# What the tokenizers compute, fixed per name: part of the cache key and of the manifest.
TOKENIZER_SCHEMES: Mapping[str, Mapping[str, Any]] = {
    "word_hash": {
        "hash": "fnv1a-32",
        "rule": "casefold unless case_sensitive; str.split(); id = fnv1a32(utf8(word)) "
        "% (vocab_size - 4) + 4; [bos] + ids + [eos], cut to max_length keeping eos; pad",
        "reference": "datakiln.datasets.tokenize.word_hash_tokenize",
    },
    "byte": {
        "hash": None,
        "rule": "casefold unless case_sensitive; id = utf-8 byte + 4; [bos] + ids + [eos], "
        "cut to max_length keeping eos; pad",
    },
}

META_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("position", pa.int64()),
        ("text", pa.string()),
        ("token_length", pa.int32()),
        ("truncated", pa.bool_()),
        ("encoding", pa.string()),
    ]
)


def _format_of(params: TextBakeParams, uri: str) -> str:
    """The format ``uri`` is read as; raises ``SpecError`` for settings that cannot apply."""
    try:
        fmt = params.format or infer_text_format(uri)
    except SpecError:
        raise SpecError(
            f"cannot tell the text format of {redact_url(uri)} from its ending; name it with "
            f"text.format (--format), one of {', '.join(TEXT_FORMATS[1:])}, or use endings "
            f"{', '.join(TEXT_EXTENSIONS)}"
        ) from None
    if fmt != "txt" and not params.field:
        raise SpecError(
            f"{uri} is read as {fmt}, which needs text.field (--field) naming the "
            f"{'key' if fmt == 'jsonl' else 'column'} that holds the text"
        )
    if params.one_per_file and fmt != "txt":
        raise SpecError(f"text.one_per_file applies to .txt files only; {uri} is read as {fmt}")
    return fmt


def _pack_ids(ids: np.ndarray, vocab_size: int) -> str:
    """The set ``ids`` as a compressed bitmap, text for the marker's JSON.

    ``vocab_size`` bits (bit ``i`` is id ``i``, big-endian within bytes as ``np.packbits``),
    zlib-compressed and base64-encoded.

    A set rather than counts keeps markers small whatever the vocabulary (10k ids: at most
    1.3 KB) while the unique-token count stays exact across shards.
    """
    bits = np.zeros((vocab_size + 7) // 8, dtype=np.uint8)
    ids = np.asarray(ids, dtype=np.int64)
    np.bitwise_or.at(bits, ids >> 3, (0x80 >> (ids & 7)).astype(np.uint8))
    return base64.b64encode(zlib.compress(bits.tobytes())).decode("ascii")


def _unpack_ids(packed: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(packed)), dtype=np.uint8)


# Token rows are stored as inner chunks of this many tokens (at least): a chunk of padding
# alone is fill and takes no bytes, so a cache costs about the tokens its texts really have.
MIN_TOKEN_CHUNK = 64
# ... and at most this many inner chunks per row, so the shard index (16 bytes per chunk)
# stays small next to the tokens.
MAX_TOKEN_CHUNKS_PER_ROW = 16


def tokenizer_arguments(params: TextBakeParams) -> dict[str, Any]:
    """``tokenize_texts_narrow``'s keyword arguments for ``params`` (its dtype included)."""
    from datakiln.etl.kernels.text import token_dtype

    return {
        "dtype": token_dtype(params.vocab_size),
        "tokenizer": params.tokenizer,
        "vocab_size": params.vocab_size,
        "max_length": params.max_length,
        "pad_id": params.pad_token_id,
        "unk_id": params.unk_token_id,
        "bos_id": params.bos_token_id,
        "eos_id": params.eos_token_id,
        "case_sensitive": params.case_sensitive,
    }


def token_chunk_cols(max_length: int) -> int:
    """Tokens per inner chunk of a ``max_length``-wide token row.

    A divisor of ``max_length``: the smallest at least ``MIN_TOKEN_CHUNK`` and giving at most
    ``MAX_TOKEN_CHUNKS_PER_ROW`` chunks a row (the whole row when none does).
    """
    least = max(MIN_TOKEN_CHUNK, -(-max_length // MAX_TOKEN_CHUNKS_PER_ROW))
    for cols in range(least, max_length + 1):
        if max_length % cols == 0:
            return cols
    return max_length


class TextModality:
    """Text bakes: units are line ranges or row groups, a shard tokenized in one jit kernel."""

    name = "text"
    extensions = tuple(TEXT_EXTENSIONS)
    worker_modules: tuple[str, ...] = ("datakiln.etl.kernels.text",)
    # Its shard tasks spend their time in the JAX tokenizer kernel, outside the GIL, and a bake
    # is short: threads share one compiled kernel and start at once (``scheduler='auto'``).
    local_scheduler = "threads"
    # Units are ranges of samples, so the bake counts samples, not files.
    one_sample_per_input = False

    def plan_units(self, spec: BakeSpec, inputs: Sequence[InputFile]) -> list[Unit]:
        params = spec.text
        formats = [_format_of(params, i.uri) for i in inputs]  # fail fast, before any read

        def plan(item: tuple[InputFile, str]) -> list[Unit]:
            try:
                return self._plan_file(spec, *item)
            except OSError as err:  # the file cannot be read: no bound on its samples
                raise SourceError(
                    f"cannot read {redact_url(item[0].uri)} to count its lines: {err}; check "
                    "the source and run the bake again"
                ) from err

        with ThreadPoolExecutor(PLAN_THREADS) as pool:
            return [u for units in pool.map(plan, zip(inputs, formats, strict=True)) for u in units]

    def _plan_file(self, spec: BakeSpec, inp: InputFile, fmt: str) -> list[Unit]:
        """Units of one file: line ranges of at most ``shard_size`` lines, row groups, or it.

        Under ``encoding = "auto"`` the file's codec is detected here, once, and every unit of
        the file carries it.
        """
        params = spec.text
        detected = None
        if params.encoding == AUTO_ENCODING:
            detected = detect_text_encoding(
                inp.uri,
                fmt=fmt,
                field=None if fmt == "txt" else params.field,
                size=inp.size,
                storage_options=spec.source_options,
            )
        encoding = detected or params.encoding
        ranges = plan_text_ranges(
            inp.uri,
            inp.size,
            params.target_bytes,
            fmt=fmt,
            one_per_file=params.one_per_file,
            encoding=encoding,
            storage_options=spec.source_options,
        )
        if fmt == "parquet":
            counts = parquet_row_counts(inp.uri, spec.source_options)
            return [Unit(inp, a, b, max(1, sum(counts[a:b])), detected) for a, b in ranges]
        if params.one_per_file:
            return [Unit(inp, a, b, 1, detected) for a, b in ranges]
        units = []
        for a, b in ranges:
            cuts = split_line_range(
                inp.uri,
                a,
                b,
                spec.shard_size,
                fmt=fmt,
                encoding=encoding,
                storage_options=spec.source_options,
            )
            units += [Unit(inp, s, e, max(1, lines), detected) for s, e, lines in cuts]
        return units

    def sample_bytes(self, spec: BakeSpec) -> int:
        from datakiln.etl.kernels.text import token_dtype

        return spec.text.max_length * token_dtype(spec.text.vocab_size).itemsize

    def fields(
        self, spec: BakeSpec, generation: str, shard_rows: int, labelled: bool
    ) -> list[FieldLayout]:
        from datakiln.etl.kernels.text import token_dtype

        text = spec.text
        return [
            FieldLayout(
                "text_tokens",
                f"{generation}/text_tokens",
                str(token_dtype(text.vocab_size)),
                (text.max_length,),
                shard_rows,
                chunk_cols=token_chunk_cols(text.max_length),
            ),
            FieldLayout(
                "text_lengths", f"{generation}/text_lengths", "int32", (), shard_rows, sharded=False
            ),
            FieldLayout("texts", f"{generation}/texts", STRING_DTYPE, (), shard_rows),
        ]

    def transforms(self, spec: BakeSpec) -> dict[str, dict[str, Any] | None]:
        return {
            "text_tokens": {"kind": "cast", "dtype": "int32"},
            "text_lengths": None,
            "texts": None,
        }

    def manifest_entries(self, spec: BakeSpec) -> dict[str, Any]:
        """The tokenizer's identity, the token layout and the encoding detector's identity.

        The tokenizer's name, hash and parameters; the token layout (tokens per inner
        chunk); and, under ``encoding = "auto"``, the encoding detector's identity. All go
        into the cache key, so a cache written with another layout is never appended to in
        place, and another detector version bakes afresh.
        """
        text = spec.text
        detector = (
            {"encoding_detector": detector_identity()} if text.encoding == AUTO_ENCODING else {}
        )
        return {
            **detector,
            "token_chunk_cols": token_chunk_cols(text.max_length),
            "tokenizer": {
                "name": text.tokenizer,
                **TOKENIZER_SCHEMES[text.tokenizer],
                "vocab_size": text.vocab_size,
                "max_length": text.max_length,
                "pad_token_id": text.pad_token_id,
                "unk_token_id": text.unk_token_id,
                "bos_token_id": text.bos_token_id,
                "eos_token_id": text.eos_token_id,
                "case_sensitive": text.case_sensitive,
            },
        }

    def bake_shard(
        self,
        shard: ShardPlan,
        spec_params: Mapping[str, Any],
        source_options: Mapping[str, Any],
        timings: dict[str, float],
    ) -> ShardOutput:
        from datakiln.etl.kernels.text import token_dtype, tokenize_texts_narrow

        params = TextBakeParams(**spec_params)
        ranges = shard.ranges or tuple((0, i.size) for i in shard.inputs)
        # per input, the codec detected when planned (None or no list: the spec's)
        planned = shard.encodings or (None,) * len(shard.inputs)
        encodings = tuple(e if e is not None else params.encoding for e in planned)
        if AUTO_ENCODING in encodings:
            raise BakeError(
                f"shard {shard.shard_id} was planned without the detected codecs that "
                "text.encoding='auto' needs; run the same command again to plan it afresh"
            )
        encodings = tuple(map(codec_name, encodings))  # as recorded: "utf8" -> "utf-8"
        t0 = time.perf_counter()

        def read(k: int) -> tuple[TextColumns, list[Rejection], int]:
            inp = shard.inputs[k]
            start, end = ranges[k] or (0, inp.size)
            fmt = params.format or infer_text_format(inp.uri)
            columns, rejections = read_text_columns(
                inp.uri,
                start,
                end,
                fmt=fmt,
                field=None if fmt == "txt" else params.field,
                one_per_file=params.one_per_file,
                encoding=encodings[k],
                errors=params.errors,
                storage_options=source_options,
            )
            # Parquet ranges are row groups: count the text bytes read instead
            size = end - start if fmt != "parquet" else sum(map(len, columns.texts))
            return columns, rejections, size

        with ThreadPoolExecutor(min(READ_THREADS, max(1, len(shard.inputs)))) as pool:
            results = list(pool.map(read, range(len(shard.inputs))))
        texts = list(itertools.chain.from_iterable(columns.texts for columns, _, _ in results))
        counts = [len(columns.texts) for columns, _, _ in results]
        rejections = [
            dataclasses.replace(r, shard=shard.shard_id) for _, rejs, _ in results for r in rejs
        ]
        n = len(texts)
        if n > shard.capacity:
            raise BakeError(
                f"shard {shard.shard_id} read {n} samples where its inputs held at most "
                f"{shard.capacity} lines when planned: an input changed during the bake; run "
                "the same command again"
            )
        t1 = time.perf_counter()
        timings["decode"] = t1 - t0

        dtype = token_dtype(params.vocab_size)
        # (n, C): the columns from C on are all padding, so nothing past C is computed or copied
        tokens, lengths, truncated = tokenize_texts_narrow(texts, **tokenizer_arguments(params))
        timings["kernel"] = time.perf_counter() - t1

        cols = tokens.shape[1]
        stored = np.zeros((shard.capacity, params.max_length), dtype)
        stored[:n, :cols] = tokens
        if params.pad_token_id != 0:
            stored[:n, cols:] = params.pad_token_id
        stored_lengths = np.zeros(shard.capacity, np.int32)
        stored_lengths[:n] = lengths
        # Ids used: every id in the tokens but the padding (BOS, word ids and EOS are never
        # pad_id), marked in a bitmap rather than sorted out of the masked tokens.
        seen = np.zeros(params.vocab_size, bool)
        seen[tokens.ravel()] = True
        seen[params.pad_token_id] = False
        used = np.flatnonzero(seen)
        which = np.repeat(np.arange(len(results), dtype=np.int32), counts)
        meta = pa.table(
            {
                "uri": pa.DictionaryArray.from_arrays(
                    which, [columns.uri for columns, _, _ in results]
                ).cast(pa.string()),
                "position": list(
                    itertools.chain.from_iterable(columns.positions for columns, _, _ in results)
                ),
                "text": texts,
                "token_length": lengths,
                "truncated": truncated,
                "encoding": pa.DictionaryArray.from_arrays(which, list(encodings)).cast(
                    pa.string()
                ),
            },
            schema=META_SCHEMA,
        )
        # per codec: files whose first range is here (each file is counted once), samples
        by_codec: dict[str, dict[str, int]] = {}
        for k, codec in enumerate(encodings):
            entry = by_codec.setdefault(codec, {"files": 0, "samples": 0})
            entry["files"] += int((ranges[k] or (0, 0))[0] == 0)
            entry["samples"] += counts[k]
        stats = {
            "n_samples": n,
            "n_tokens": int(lengths.sum()),
            "n_truncated": int(np.count_nonzero(truncated)),
            "length_histogram": np.bincount(lengths, minlength=params.max_length + 1).tolist(),
            "used_ids": _pack_ids(used, params.vocab_size),
            "encodings": by_codec,
        }
        return ShardOutput(
            rows=n,
            arrays={
                "text_tokens": stored,
                "text_lengths": stored_lengths,
                "texts": texts + [""] * (shard.capacity - n),
            },
            meta=meta,
            rejections=rejections,
            bytes_in=sum(r[2] for r in results),
            stats=stats,
        )

    def merge_stats(self, spec: BakeSpec, markers: Sequence[ShardMarker]) -> dict[str, Any]:
        text = spec.text
        used = np.zeros((text.vocab_size + 7) // 8, dtype=np.uint8)
        histogram = np.zeros(text.max_length + 1, dtype=np.int64)
        n_samples = n_tokens = n_truncated = 0
        encodings: dict[str, dict[str, int]] = {}
        for marker in markers:
            s = marker.stats
            for codec, entry in s.get("encodings", {}).items():  # absent in older markers
                total = encodings.setdefault(codec, {"files": 0, "samples": 0})
                total["files"] += entry["files"]
                total["samples"] += entry["samples"]
            used |= _unpack_ids(s["used_ids"])
            histogram += np.asarray(s["length_histogram"], dtype=np.int64)
            n_samples += s["n_samples"]
            n_tokens += s["n_tokens"]
            n_truncated += s["n_truncated"]
        unique = int(np.bitwise_count(used).sum())
        special = int(np.bitwise_count(used[:1] & 0xF0).sum())  # ids 0..3: the first 4 bits
        return {
            "tokenizer": text.tokenizer,
            "vocab_size": text.vocab_size,
            "max_length": text.max_length,
            "total_sequences": n_samples,
            "n_tokens": n_tokens,
            "n_truncated": n_truncated,
            "unique_tokens": unique,
            # the seed's definition (special ids count), and the share of word/byte ids used
            "vocab_coverage": unique / text.vocab_size,
            "coverage": (unique - special) / (text.vocab_size - NUM_SPECIAL_IDS),
            "mean_length": n_tokens / n_samples if n_samples else 0.0,
            "length_histogram": histogram.tolist(),
            # the codecs the texts were decoded with: files and baked samples per codec
            "encodings": dict(sorted(encodings.items())),
        }


MODALITY = TextModality()
