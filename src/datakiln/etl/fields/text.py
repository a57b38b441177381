"""Text fields: a record's string (or a text member's bytes), tokenized per shard in one kernel.

Stored: ``<name>`` tokens (N, max_length) in the smallest unsigned dtype that holds the
vocabulary (read as int32), ``<name>_lengths`` int32, and ``<name>_text`` the raw strings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from datakiln.etl.fields import register_codec
from datakiln.etl.fields.base import Context, Encoded, FieldError
from datakiln.etl.spec import FieldSpec, TextBakeParams
from datakiln.readers.encoding import AUTO_ENCODING
from datakiln.readers.rejections import EMPTY_SAMPLE, STAGE_DECODE, STAGE_VALIDATE
from datakiln.writers.zarr_region import STRING_DTYPE, FieldLayout


class _Text(NamedTuple):
    text: str
    codec: str | None


class TextCodec:
    """The codec of ``text`` fields: tokens, lengths and raw strings (see above)."""

    modality = "text"
    media = False
    params_type = TextBakeParams
    worker_modules: tuple[str, ...] = ("datakiln.etl.kernels.text",)

    def layouts(self, spec: FieldSpec, generation: str, shard_rows: int) -> list[FieldLayout]:
        from datakiln.etl.kernels.text import token_dtype
        from datakiln.etl.modalities.text import token_chunk_cols

        p: TextBakeParams = spec.params
        n = spec.name
        return [
            FieldLayout(
                n,
                f"{generation}/{n}",
                str(token_dtype(p.vocab_size)),
                (p.max_length,),
                shard_rows,
                chunk_cols=token_chunk_cols(p.max_length),
            ),
            FieldLayout(
                f"{n}_lengths", f"{generation}/{n}_lengths", "int32", (), shard_rows, sharded=False
            ),
            FieldLayout(f"{n}_text", f"{generation}/{n}_text", STRING_DTYPE, (), shard_rows),
        ]

    def transforms(self, spec: FieldSpec) -> dict[str, dict[str, Any] | None]:
        n = spec.name
        return {n: {"kind": "cast", "dtype": "int32"}, f"{n}_lengths": None, f"{n}_text": None}

    def sample_bytes(self, spec: FieldSpec) -> int:
        from datakiln.etl.kernels.text import token_dtype

        return int(spec.params.max_length * token_dtype(spec.params.vocab_size).itemsize)

    def identity(self, spec: FieldSpec) -> dict[str, Any]:
        from datakiln.etl.modalities.text import TOKENIZER_SCHEMES

        return {"tokenizer": dict(TOKENIZER_SCHEMES[spec.params.tokenizer])}

    def decode(self, value: Any, spec: FieldSpec, context: Context) -> Any:
        p: TextBakeParams = spec.params
        codec = None
        if isinstance(value, bytes | bytearray):
            value, codec = bytes(value), p.encoding
            if codec == AUTO_ENCODING:
                from datakiln.readers.encoding import detect_values_encoding

                codec = detect_values_encoding([value])
            try:
                value = value.decode(codec, errors="strict" if p.errors == "reject" else "replace")
            except (UnicodeDecodeError, LookupError) as err:
                raise FieldError(STAGE_DECODE, type(err).__name__, str(err)) from err
        elif not isinstance(value, str):
            value = str(value)
        text = value.replace("\r\n", "\n").strip()
        if not text:
            raise FieldError(STAGE_VALIDATE, EMPTY_SAMPLE, "empty text")
        return _Text(text, codec)

    def encode(
        self, decoded: Sequence[Any], spec: FieldSpec, capacity: int, context: Context
    ) -> Encoded:
        from datakiln.etl.kernels.text import token_dtype, tokenize_texts_narrow
        from datakiln.etl.modalities.text import tokenizer_arguments

        p: TextBakeParams = spec.params
        texts = [t.text if t is not None else "" for t in decoded]
        dtype = token_dtype(p.vocab_size)
        stored = np.full((capacity, p.max_length), p.pad_token_id, dtype)
        lengths = np.zeros(capacity, np.int32)
        truncated = np.zeros(len(texts), bool)
        if texts:
            tokens, got, truncated = tokenize_texts_narrow(texts, **tokenizer_arguments(p))
            stored[: len(texts), : tokens.shape[1]] = tokens
            lengths[: len(texts)] = got
        missing = [k for k, t in enumerate(decoded) if t is None]
        stored[missing] = p.pad_token_id
        lengths[missing] = 0
        n = spec.name
        valid = lengths[: len(texts)]
        return Encoded(
            arrays={
                n: stored,
                f"{n}_lengths": lengths,
                f"{n}_text": texts + [""] * (capacity - len(texts)),
            },
            meta={
                f"{n}_token_length": valid.tolist(),
                # the codec bytes were decoded with (text members); null for table strings
                f"{n}_encoding": [t.codec if t is not None else None for t in decoded],
            },
            stats={
                "n_samples": len(texts) - len(missing),
                "n_tokens": int(valid.sum()),
                "n_truncated": int(np.count_nonzero(truncated)),
            },
        )

    def merge_stats(self, spec: FieldSpec, stats: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        n = sum(s["n_samples"] for s in stats)
        tokens = sum(s["n_tokens"] for s in stats)
        return {
            "tokenizer": spec.params.tokenizer,
            "vocab_size": spec.params.vocab_size,
            "max_length": spec.params.max_length,
            "total_sequences": n,
            "n_tokens": tokens,
            "n_truncated": sum(s["n_truncated"] for s in stats),
            "mean_length": tokens / n if n else 0.0,
        }


CODEC = register_codec(TextCodec())
