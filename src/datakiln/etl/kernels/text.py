"""Text kernels: word-hash and byte tokenization of a shard's texts (jax + numpy only).

The host turns strings into a padded UTF-8 byte matrix (``encode_texts``: full Unicode case
folding is a table lookup that Python already does well, and the few non-ASCII whitespace
characters become spaces there); a jit-compiled kernel finds the words, hashes them, and places
BOS + ids + EOS, truncated and padded to ``max_length`` (``tokenize_word_hash``,
``tokenize_bytes``). ``tokenize_texts`` does both steps for a list of strings, bucketing shapes
so that a bake compiles a handful of times.

How the word-hash kernel runs fast on CPU (XLA's scatters, sorts, cumulative sums over wide
arrays and small-bodied loops are slow there; elementwise work and gathers of whole windows are
not): word starts become one bit per byte, 32 to a uint32, so finding the column of the j-th
word is a prefix sum over W/32 blocks plus a popcount binary search inside one block; each kept
word's FNV-1a is then folded 8 bytes per round from one windowed gather, rounds continuing
while any word goes on; ids land in their slots directly, with no scatter. (A first version
that scanned all columns and scattered ids took ~7x longer on 4096 x 512 bytes.)

The ``word_hash`` scheme (fixed: ids must be the same in every process, on every machine, and
in ``datakiln.datasets.tokenize``, which implements it in plain Python):

1. ``text.casefold()`` unless ``case_sensitive``;
2. ``words = text.split()`` (Python's whitespace, ``str.isspace``);
3. ``id = fnv1a_32(word.encode("utf-8")) % (vocab_size - 4) + 4`` with FNV-1a 32-bit (offset
   basis 2166136261, prime 16777619, arithmetic mod 2**32);
4. ``seq = [bos_id, *ids, eos_id]``; longer than ``max_length``: ``seq[:max_length-1] + [eos]``;
5. pad with ``pad_id`` to ``max_length``.

The ``byte`` scheme: ``casefold()`` unless ``case_sensitive`` (whitespace kept as is), then
each UTF-8 byte ``b`` becomes ``b + 4`` (so ``vocab_size >= 260``), with the same BOS/EOS,
truncation and padding.

Ids ``0..3`` are the special tokens' range; no word or byte maps there. ``unk_id`` is accepted
for the seed's ``text_params`` but never emitted: every word has a hash. The scheme is the one
of ``datakiln.datasets.tokenize`` (same validation: ``max_length >= 1``, special ids any ids
below ``vocab_size``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

from datakiln.errors import SpecError

TOKENIZERS = ("word_hash", "byte")
# Ids below this are reserved for pad/unk/bos/eos; word and byte ids start here.
NUM_SPECIAL_IDS = 4
FNV_OFFSET_BASIS = 2166136261
FNV_PRIME = 16777619
# Byte tokenizer: 256 byte values after the special ids.
BYTE_VOCAB_SIZE = 256 + NUM_SPECIAL_IDS
# Narrowest byte-matrix width ``tokenize_texts`` uses (widths are powers of two from here).
MIN_BYTE_WIDTH = 64
# ``tokenize_texts`` first tries a width of this many bytes per token at most, and widens
# only the rows that need it (long words or texts whose kept words lie further in).
BYTES_PER_TOKEN_GUESS = 8
# Rows are padded to a power of two of at least this many, so shard tails compile rarely.
MIN_ROW_BUCKET = 8
# ``tokenize_texts`` passes at most this many rows to one kernel call.
ROW_CHUNK = 4096
# Columns per bit-packed block of the word-start search (bits in a uint32).
_BLOCK = 32
# Bytes of each word hashed per round of the hash loop (unrolled inside a round).
_HASH_CHUNK = 8


def token_dtype(vocab_size: int) -> np.dtype[Any]:
    """The smallest unsigned integer dtype that holds every id in ``[0, vocab_size)``."""
    if vocab_size < 1:
        raise SpecError(f"vocab_size must be positive, got {vocab_size}")
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise SpecError(f"vocab_size {vocab_size} does not fit in uint32 ids")


def check_text_params(
    *,
    tokenizer: str = "word_hash",
    vocab_size: int,
    max_length: int,
    pad_id: int,
    unk_id: int,
    bos_id: int,
    eos_id: int,
) -> None:
    """Raise ``SpecError`` unless the parameters make a valid tokenizer.

    Rules: ``max_length >= 1`` (with 1 every sequence is ``[eos]``); ``vocab_size > 4`` for
    word_hash and ``>= 260`` for byte; every special id in ``[0, vocab_size)``. Special ids
    should be 0..3 in some order (the seed's are pad 0, unk 1, bos 2, eos 3): ids from 4 on are
    also word or byte ids, and such a collision is allowed, as in
    ``datakiln.datasets.tokenize``, but makes the tokens ambiguous.
    """
    if tokenizer not in TOKENIZERS:
        raise SpecError(f"tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")
    if max_length < 1:
        raise SpecError(f"max_length must be at least 1, got {max_length}")
    least = NUM_SPECIAL_IDS + 1 if tokenizer == "word_hash" else BYTE_VOCAB_SIZE
    if vocab_size < least:
        raise SpecError(f"vocab_size must be at least {least} for {tokenizer}, got {vocab_size}")
    if vocab_size > 2**31:
        raise SpecError(f"vocab_size must be at most 2**31 (int32 ids), got {vocab_size}")
    ids = {"pad_id": pad_id, "unk_id": unk_id, "bos_id": bos_id, "eos_id": eos_id}
    for name, value in ids.items():
        if not 0 <= value < vocab_size:
            raise SpecError(f"{name} must lie in [0, vocab_size={vocab_size}), got {value}")


def encode_texts(
    texts: Sequence[str],
    *,
    case_sensitive: bool,
    max_bytes: int,
    normalize_whitespace: bool = True,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int32]]:
    """Pack strings into a zero-padded UTF-8 byte matrix for the tokenizer kernels.

    Case is folded with ``str.casefold()`` (full Unicode folding, e.g. ``"ß" -> "ss"``) unless
    ``case_sensitive``. With ``normalize_whitespace`` (word_hash), every Unicode whitespace
    character becomes a separator the kernel recognises: ASCII whitespace bytes stay as they
    are (the kernel treats all of ``str.isspace``'s ASCII characters as separators), and a
    text holding any non-ASCII character is rewritten as ``" ".join(text.split())``. Either
    way the kernel sees exactly the words ``str.split()`` finds. Without it (byte tokenizer)
    the text is encoded as is.

    Args:
        texts: The samples.
        case_sensitive: Keep case.
        max_bytes: Width of the matrix; longer texts are cut there (their full length is still
            reported, so the kernels can tell a cut row from a short one).
        normalize_whitespace: Collapse whitespace as above.

    Returns:
        ``(byte_matrix, lengths)``: uint8 ``(N, max_bytes)`` zero-padded, and int32 ``(N,)``
        full UTF-8 lengths (after folding and normalising), which may exceed ``max_bytes``.
    """
    if max_bytes < 1:
        raise SpecError(f"max_bytes must be positive, got {max_bytes}")
    if normalize_whitespace:
        return _pack(_encode_words(texts, case_sensitive), max_bytes)
    if not case_sensitive:
        texts = [t.casefold() for t in texts]
    return _pack([t.encode("utf-8") for t in texts], max_bytes)


def _is_space(byte: jax.Array) -> jax.Array:
    r"""Whether UTF-8 bytes are ASCII whitespace in the sense of ``str.isspace``.

    These are ``\t \n \v \f \r``, ``\x1c``-``\x1f`` and the space; no byte of a
    multi-byte UTF-8 sequence is below 0x80, so they never occur inside other characters.
    """
    return (byte == 0x20) | ((byte >= 0x09) & (byte <= 0x0D)) | ((byte >= 0x1C) & (byte <= 0x1F))


def _encode_words(texts: Sequence[str], case_sensitive: bool) -> list[bytes]:
    """UTF-8 for the word-hash kernel: folded, and whitespace the kernel cannot see made b" "."""
    if not case_sensitive:
        texts = [t.casefold() for t in texts]
    # ASCII whitespace is recognised by the kernel (_is_space); other Unicode whitespace
    # (U+00A0, U+3000, ...) is multi-byte, so such texts are re-joined with single spaces,
    # which leaves their words exactly as str.split() finds them. isascii() is O(1).
    return [
        t.encode("utf-8") if t.isascii() else " ".join(t.split()).encode("utf-8") for t in texts
    ]


def _pack(
    encoded: Sequence[bytes], width: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int32]]:
    n = len(encoded)
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=n)
    # numpy's fixed-width bytes dtype cuts and NUL-pads each item in C: ~10x faster than
    # padding each row in Python (trailing NULs of an item are zeros either way).
    matrix = np.array(encoded, dtype=f"S{width}").view(np.uint8).reshape(n, width)
    return matrix, np.minimum(lengths, np.iinfo(np.int32).max).astype(np.int32)


def _word_bound(matrix: npt.NDArray[np.uint8], lengths: npt.NDArray[np.int32]) -> int:
    """An upper bound on the words of any row inside ``matrix`` (for ``max_words``).

    Every word but a row's first follows an ASCII whitespace byte, and those are all <= 0x20;
    the NUL padding past a row's length is <= 0x20 too and is taken off again.
    """
    if not matrix.size:
        return 0
    width = matrix.shape[1]
    low = np.count_nonzero(matrix <= 0x20, axis=1)
    padding = width - np.minimum(lengths.astype(np.int64), width)
    return int((low - padding).max()) + 1


@functools.partial(
    jax.jit,
    static_argnames=(
        "vocab_size",
        "max_length",
        "pad_id",
        "bos_id",
        "eos_id",
        "max_words",
        "out_dtype",
    ),
)
def _word_hash_kernel(
    byte_matrix: jax.Array,
    lengths: jax.Array,
    *,
    vocab_size: int,
    max_length: int,
    pad_id: int,
    bos_id: int,
    eos_id: int,
    max_words: int | None = None,
    out_dtype: str = "int32",
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """See ``tokenize_word_hash``; ``max_words`` narrows the result.

    ``max_words``, when given, must bound every row's words inside the matrix
    (``_word_bound``); the tokens then come back only ``min(max_length, max_words + 2)``
    columns wide (the rest would be padding), and the per-slot work shrinks to that many
    slots. ``out_dtype`` is the tokens' dtype.
    """
    n, width = byte_matrix.shape
    keep = max_length - 2  # word ids between BOS and EOS; -1 when max_length == 1 ([eos])
    # Word slots to fill: words are separated by whitespace, so a row holds at most ceil(W / 2).
    slots = max(0, min(keep, (width + 1) // 2))
    if max_words is not None:
        slots = max(0, min(slots, max_words))
    out_length = max_length if max_words is None else max(1, min(max_length, slots + 2))
    blocks = -(-width // _BLOCK)
    if blocks * _BLOCK != width:
        byte_matrix = jnp.pad(byte_matrix, ((0, 0), (0, blocks * _BLOCK - width)))
    col = jnp.arange(blocks * _BLOCK, dtype=jnp.int32)[None, :]
    row_length = jnp.minimum(lengths, width)[:, None]
    in_word = (col < row_length) & ~_is_space(byte_matrix)  # NUL bytes are word bytes

    # Word starts as one bit per column, 32 columns per uint32 block: the shifts and prefix
    # sums that find them then run on (N, W / 32) arrays instead of (N, W).
    bit = jnp.arange(_BLOCK, dtype=jnp.uint32)[None, None, :]
    word_bits = jnp.sum(
        in_word.reshape(n, blocks, _BLOCK).astype(jnp.uint32) << bit, axis=2, dtype=jnp.uint32
    )
    carry = jnp.concatenate(
        [jnp.zeros((n, 1), jnp.uint32), word_bits[:, :-1] >> jnp.uint32(_BLOCK - 1)], axis=1
    )
    start_bits = word_bits & ~((word_bits << jnp.uint32(1)) | carry)
    per_block = jax.lax.population_count(start_bits).astype(jnp.int32)
    through = jnp.cumsum(per_block, axis=1, dtype=jnp.int32)  # starts in blocks <= b
    n_words = through[:, -1]

    # Column of word j's start for each slot j: its block (blocks whose running count is
    # <= j come before it), then the (j - starts before the block)-th set bit in that block,
    # by a 5-step binary search on popcounts. Slots past the row's words get block == blocks.
    slot = jnp.arange(slots, dtype=jnp.int32)[None, :]
    block = jnp.sum((through[:, None, :] <= slot[:, :, None]).astype(jnp.int32), axis=2)
    has_word = block < blocks
    block = jnp.minimum(block, blocks - 1)
    flat = (jnp.arange(n, dtype=jnp.int32) * blocks)[:, None] + block
    rank = slot - (through - per_block).reshape(-1)[flat]
    mask = start_bits.reshape(-1)[flat]
    offset = jnp.zeros((n, slots), jnp.int32)
    for step in (16, 8, 4, 2, 1):
        below = (jnp.uint32(1) << (offset + step).astype(jnp.uint32)) - jnp.uint32(1)
        seen = jax.lax.population_count(mask & below).astype(jnp.int32)
        offset = jnp.where(seen <= rank, offset + step, offset)
    start = block * _BLOCK + offset

    # FNV-1a of every slot's word, _HASH_CHUNK bytes per round: each round slices a window of
    # bytes per word (one gather) and folds it in, unrolled; rounds go on while any word does.
    basis = jnp.uint32(FNV_OFFSET_BASIS)
    prime = jnp.uint32(FNV_PRIME)
    padded = jnp.pad(byte_matrix, ((0, 0), (0, _HASH_CHUNK)))
    last = blocks * _BLOCK

    def chunk_at(row: jax.Array, at: jax.Array) -> jax.Array:
        return jax.lax.dynamic_slice(row, (at,), (_HASH_CHUNK,))

    window = jax.vmap(jax.vmap(chunk_at, (None, 0)))

    def more(state: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
        return jnp.any(state[2])

    def fold(
        state: tuple[jax.Array, jax.Array, jax.Array],
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        at, h, active = state
        chunk = window(padded, jnp.minimum(at, last))
        for k in range(_HASH_CHUNK):
            byte = chunk[:, :, k]
            active = active & (at + k < row_length) & ~_is_space(byte)
            # uint32 arithmetic wraps mod 2**32, as FNV-1a wants.
            h = jnp.where(active, (h ^ byte.astype(jnp.uint32)) * prime, h)
        return at + _HASH_CHUNK, h, active

    _, hashes, _ = jax.lax.while_loop(more, fold, (start, jnp.full((n, slots), basis), has_word))
    ids = (hashes % jnp.uint32(vocab_size - NUM_SPECIAL_IDS)).astype(jnp.int32)
    ids = ids + NUM_SPECIAL_IDS
    kept = jnp.minimum(n_words, keep)
    body = jnp.where(slot < kept[:, None], ids, pad_id)
    tokens = jnp.full((n, out_length), pad_id, dtype=jnp.int32)
    tokens = tokens.at[:, 1 : 1 + slots].set(body[:, : max(0, out_length - 1)])
    out_col = jnp.arange(out_length, dtype=jnp.int32)[None, :]
    tokens = jnp.where(out_col == 0, bos_id, tokens)
    tokens = jnp.where(out_col == (kept + 1)[:, None], eos_id, tokens)
    # A row cut by the matrix width is still exact if the word after the kept ones starts
    # inside it: then every kept word ended inside it too, and the row is truncated.
    exact = (lengths <= width) | (n_words > keep)
    return tokens.astype(out_dtype), kept + 2, n_words > keep, exact


@functools.partial(jax.jit, static_argnames=("max_length", "pad_id", "bos_id", "eos_id"))
def _byte_kernel(
    byte_matrix: jax.Array,
    lengths: jax.Array,
    *,
    max_length: int,
    pad_id: int,
    bos_id: int,
    eos_id: int,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    n, width = byte_matrix.shape
    keep = max_length - 2  # -1 when max_length == 1: the sequence is [eos]
    body_width = max(keep, 0)
    if width < body_width:
        byte_matrix = jnp.pad(byte_matrix, ((0, 0), (0, body_width - width)))
    body = byte_matrix[:, :body_width].astype(jnp.int32) + NUM_SPECIAL_IDS
    kept = jnp.minimum(lengths, keep)
    body_col = jnp.arange(body_width, dtype=jnp.int32)[None, :]
    body = jnp.where(body_col < kept[:, None], body, pad_id)
    tokens = jnp.concatenate(
        [jnp.full((n, 1), bos_id, jnp.int32), body, jnp.full((n, 1), pad_id, jnp.int32)], axis=1
    )[:, :max_length]
    out_col = jnp.arange(max_length, dtype=jnp.int32)[None, :]
    tokens = jnp.where(out_col == (kept + 1)[:, None], eos_id, tokens)
    exact = (lengths <= width) | (width >= keep)
    return tokens, kept + 2, lengths > keep, exact


def _check_exact(exact: jax.Array, lengths: Any, width: int, max_length: int) -> None:
    bad = np.flatnonzero(~np.asarray(exact))
    if bad.size:
        raise ValueError(
            f"rows {bad[:10].tolist()} (of {bad.size}) are longer than the byte matrix "
            f"({width} bytes; lengths {np.asarray(lengths)[bad[:10]].tolist()}) and their "
            f"first {max_length - 2} tokens do not all lie inside it, so their ids cannot be "
            "computed exactly; encode them with a larger max_bytes, or use tokenize_texts, "
            "which widens such rows itself"
        )


def tokenize_word_hash(
    byte_matrix: jax.Array | np.ndarray,
    lengths: jax.Array | np.ndarray,
    *,
    vocab_size: int,
    max_length: int,
    pad_id: int = 0,
    unk_id: int = 1,
    bos_id: int = 2,
    eos_id: int = 3,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Word-hash tokenize a byte matrix from ``encode_texts`` (jit-compiled; see module doc).

    Words are the maximal runs of bytes other than ASCII whitespace within each row's length,
    so the matrix must come from ``encode_texts(..., normalize_whitespace=True)``. One compile
    per (shape, parameters).

    Args:
        byte_matrix: uint8 ``(N, W)``.
        lengths: int32 ``(N,)`` full byte lengths (may exceed ``W``).
        vocab_size: Ids in the vocabulary; words hash to ``4..vocab_size - 1``. This and the
            ids below are the seed's ``text_params``.
        max_length: Tokens per row, BOS and EOS included.
        pad_id: Id filling each row after its EOS.
        unk_id: Accepted, and checked, but never emitted: every word has a hash.
        bos_id: Id starting every row.
        eos_id: Id ending every row, truncated or not.

    Returns:
        ``(tokens, token_lengths, truncated)``: int32 ``(N, max_length)``, int32 ``(N,)``
        (BOS and EOS included), bool ``(N,)`` (words were dropped).

    Raises:
        ValueError: A row is longer than ``W`` and its kept words do not all end inside it
            (its ids would differ from the scheme's); nothing is returned silently wrong.
        SpecError: Invalid parameters.
    """
    check_text_params(
        vocab_size=vocab_size,
        max_length=max_length,
        pad_id=pad_id,
        unk_id=unk_id,
        bos_id=bos_id,
        eos_id=eos_id,
    )
    tokens, token_lengths, truncated, exact = _word_hash_kernel(
        jnp.asarray(byte_matrix, dtype=jnp.uint8),
        jnp.asarray(lengths, dtype=jnp.int32),
        vocab_size=vocab_size,
        max_length=max_length,
        pad_id=pad_id,
        bos_id=bos_id,
        eos_id=eos_id,
    )
    _check_exact(exact, lengths, byte_matrix.shape[1], max_length)
    return tokens, token_lengths, truncated


def tokenize_bytes(
    byte_matrix: jax.Array | np.ndarray,
    lengths: jax.Array | np.ndarray,
    *,
    vocab_size: int = BYTE_VOCAB_SIZE,
    max_length: int,
    pad_id: int = 0,
    unk_id: int = 1,
    bos_id: int = 2,
    eos_id: int = 3,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Byte tokenize a byte matrix from ``encode_texts`` (jit-compiled; see module doc).

    The matrix must be at least ``max_length - 2`` wide, or rows must fit in it.

    Returns:
        ``(tokens, token_lengths, truncated)`` as ``tokenize_word_hash``.

    Raises:
        ValueError: A row was cut by the matrix before ``max_length - 2`` bytes.
        SpecError: Invalid parameters.
    """
    check_text_params(
        tokenizer="byte",
        vocab_size=vocab_size,
        max_length=max_length,
        pad_id=pad_id,
        unk_id=unk_id,
        bos_id=bos_id,
        eos_id=eos_id,
    )
    tokens, token_lengths, truncated, exact = _byte_kernel(
        jnp.asarray(byte_matrix, dtype=jnp.uint8),
        jnp.asarray(lengths, dtype=jnp.int32),
        max_length=max_length,
        pad_id=pad_id,
        bos_id=bos_id,
        eos_id=eos_id,
    )
    _check_exact(exact, lengths, byte_matrix.shape[1], max_length)
    return tokens, token_lengths, truncated


def _next_pow2(x: int, least: int) -> int:
    return max(least, 1 << max(0, int(x) - 1).bit_length())


def tokenize_texts(
    texts: Sequence[str],
    *,
    tokenizer: str = "word_hash",
    vocab_size: int,
    max_length: int,
    pad_id: int = 0,
    unk_id: int = 1,
    bos_id: int = 2,
    eos_id: int = 3,
    case_sensitive: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokenize strings: ``encode_texts`` then the tokenizer's kernel, on bucketed shapes.

    Each row gets a byte width that is a power of two (at least ``MIN_BYTE_WIDTH``) holding
    its text, and rows of one width go through the kernel together, at most ``ROW_CHUNK`` at a
    time, padded to a power of two rows (at least ``MIN_ROW_BUCKET``); so short texts cost
    little and a bake compiles a handful of times. For word_hash widths start at most
    ``BYTES_PER_TOKEN_GUESS * max_length``; a longer row whose kept words do not all fit is
    tokenized again wider, so every row's ids equal the scheme's exactly.

    Returns:
        ``(tokens, token_lengths, truncated)`` as numpy: int32 ``(N, max_length)``, int32
        ``(N,)``, bool ``(N,)``.

    Example:
        >>> tokens, lengths, truncated = tokenize_texts(
        ...     ["Hello hello", "a b c d"], vocab_size=100, max_length=5
        ... )
        >>> tokens.tolist()  # "hello" twice (case folded); the second row keeps EOS
        [[2, 79, 79, 3, 0], [2, 80, 41, 54, 3]]
        >>> lengths.tolist(), truncated.tolist()
        ([4, 5], [False, True])
    """
    narrow, token_lengths, truncated = tokenize_texts_narrow(
        texts,
        tokenizer=tokenizer,
        vocab_size=vocab_size,
        max_length=max_length,
        pad_id=pad_id,
        unk_id=unk_id,
        bos_id=bos_id,
        eos_id=eos_id,
        case_sensitive=case_sensitive,
        dtype=np.int32,
    )
    tokens = np.full((len(texts), max_length), pad_id, dtype=np.int32)
    tokens[:, : narrow.shape[1]] = narrow
    return tokens, token_lengths, truncated


def tokenize_texts_narrow(
    texts: Sequence[str],
    *,
    tokenizer: str = "word_hash",
    vocab_size: int,
    max_length: int,
    pad_id: int = 0,
    unk_id: int = 1,
    bos_id: int = 2,
    eos_id: int = 3,
    case_sensitive: bool = False,
    dtype: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``tokenize_texts`` without the trailing padding: what a shard task stores.

    Returns ``(tokens, token_lengths, truncated)`` with tokens ``(N, C)``, ``C <= max_length``
    (every column from ``C`` on would be ``pad_id``), in ``dtype`` (default
    ``token_dtype(vocab_size)``). For word_hash the kernel is told a bound on each group's
    words (``_word_bound``), so short texts under a long ``max_length`` cost only their words.
    """
    check_text_params(
        tokenizer=tokenizer,
        vocab_size=vocab_size,
        max_length=max_length,
        pad_id=pad_id,
        unk_id=unk_id,
        bos_id=bos_id,
        eos_id=eos_id,
    )
    dtype = token_dtype(vocab_size) if dtype is None else np.dtype(dtype)
    n = len(texts)
    token_lengths = np.zeros(n, dtype=np.int32)
    truncated = np.zeros(n, dtype=bool)
    if n == 0:
        return np.zeros((0, min(max_length, 2)), dtype), token_lengths, truncated
    ids = {"pad_id": pad_id, "bos_id": bos_id, "eos_id": eos_id}
    if tokenizer == "byte":
        folded = texts if case_sensitive else [t.casefold() for t in texts]
        encoded = [t.encode("utf-8") for t in folded]
        # Only the first max_length - 2 bytes are ever used: the width is fixed by max_length.
        widths = np.full(n, _next_pow2(max_length - 2, MIN_BYTE_WIDTH), dtype=np.int64)
        kernel = functools.partial(_byte_kernel, max_length=max_length, **ids)
    else:
        encoded = _encode_words(texts, case_sensitive)
        cap = _next_pow2(BYTES_PER_TOKEN_GUESS * max_length, MIN_BYTE_WIDTH)
        widths = _pow2_widths(np.fromiter(map(len, encoded), np.int64, n), MIN_BYTE_WIDTH, cap)
        kernel = functools.partial(
            _word_hash_kernel,
            vocab_size=vocab_size,
            max_length=max_length,
            out_dtype=dtype.name,
            **ids,
        )
    parts: list[tuple[np.ndarray, np.ndarray]] = []  # (rows, their tokens)
    todo = np.arange(n)
    while todo.size:
        retry = []
        for width in np.unique(widths[todo]).tolist():
            group = todo[widths[todo] == width]
            for first in range(0, group.size, ROW_CHUNK):
                rows = group[first : first + ROW_CHUNK]
                padded_rows = _next_pow2(rows.size, MIN_ROW_BUCKET)
                part = [encoded[i] for i in rows] + [b""] * (padded_rows - rows.size)
                matrix, lengths = _pack(part, width)
                if tokenizer == "byte":
                    out = kernel(jnp.asarray(matrix), jnp.asarray(lengths))
                else:  # a power of two slots (at least 8): few compiles
                    bound = _next_pow2(_word_bound(matrix, lengths), MIN_ROW_BUCKET)
                    out = kernel(jnp.asarray(matrix), jnp.asarray(lengths), max_words=bound)
                t, tl, tr, exact = (np.asarray(a)[: rows.size] for a in out)
                parts.append((rows[exact], t[exact]))
                token_lengths[rows[exact]] = tl[exact]
                truncated[rows[exact]] = tr[exact]
                wider = rows[~exact]
                if wider.size:  # longer than width: at most 8x wider next round
                    full = np.fromiter((len(encoded[i]) for i in wider), np.int64, wider.size)
                    widths[wider] = _pow2_widths(full, 2 * width, 8 * width)
                    retry.append(wider)
        todo = np.concatenate(retry) if retry else todo[:0]
    cols = max(t.shape[1] for _, t in parts)
    tokens = np.full((n, cols), pad_id, dtype=dtype)
    for rows, t in parts:
        tokens[rows, : t.shape[1]] = t.astype(dtype, copy=False)
    return tokens, token_lengths, truncated


def _pow2_widths(lengths: np.ndarray, least: int, cap: int) -> np.ndarray:
    """Per row, the smallest power of two in ``[least, cap]`` that is >= its length (or cap)."""
    widths = np.full(lengths.shape, least, dtype=np.int64)
    while True:
        grow = (widths < lengths) & (widths < cap)
        if not grow.any():
            return widths
        widths[grow] *= 2
