"""The word-hash tokenizer of the seed's text datasets, with a stable hash (host reference).

This module is the reference that the bake's JAX text kernel must match bit for bit, so its
definition is fixed:

1. Unless ``case_sensitive``, fold case with ``str.casefold()``.
2. Split with ``str.split()`` (runs of any Unicode whitespace; no empty words).
3. Each word's id is ``fnv1a32(word.encode("utf-8")) % (vocab_size - 4) + 4``, where
   ``fnv1a32`` is 32-bit FNV-1a: ``h = 2166136261``; for each byte ``b``:
   ``h = ((h ^ b) * 16777619) % 2**32``. Ids 0-3 stay free for the special tokens.
4. The sequence is ``[bos_token_id] + word_ids + [eos_token_id]``.
5. If it is longer than ``max_length``, keep its first ``max_length - 1`` tokens and put
   ``eos_token_id`` last, so a truncated sequence still ends with EOS.
6. Pad with ``pad_token_id`` to ``max_length``. The returned length counts the tokens before
   the padding.

The seed used Python's ``hash``, which is salted per process (``PYTHONHASHSEED``), so the same
word got different ids in different processes; FNV-1a over UTF-8 bytes is the same everywhere.
``unk_token_id`` is accepted for the seed's signature: hashing gives every word an id, so it is
never produced here (augmentation uses it as the mask token).
"""

from __future__ import annotations

import numpy as np

from datakiln.errors import SpecError

# 32-bit FNV-1a parameters (http://www.isthe.com/chongo/tech/comp/fnv/).
FNV_OFFSET_BASIS = 2166136261
FNV_PRIME = 16777619
# Ids below this are reserved for pad, unk, bos and eos.
NUM_RESERVED_IDS = 4


def word_hash(word: str) -> int:
    """32-bit FNV-1a hash of ``word``'s UTF-8 bytes, in ``[0, 2**32)``."""
    h = FNV_OFFSET_BASIS
    for byte in word.encode("utf-8"):
        h = ((h ^ byte) * FNV_PRIME) & 0xFFFFFFFF
    return h


def word_id(word: str, vocab_size: int) -> int:
    """Token id of one (already case-folded) word: ``word_hash % (vocab_size - 4) + 4``."""
    return word_hash(word) % (vocab_size - NUM_RESERVED_IDS) + NUM_RESERVED_IDS


def word_hash_tokenize(
    text: str,
    *,
    vocab_size: int,
    max_length: int,
    pad_token_id: int = 0,
    unk_token_id: int = 1,
    bos_token_id: int = 2,
    eos_token_id: int = 3,
    case_sensitive: bool = False,
) -> tuple[np.ndarray, int]:
    """Tokenize ``text`` as the module doc defines.

    Returns:
        ``(tokens, length)``: an int32 array of shape ``(max_length,)`` and the number of
        tokens before the padding (BOS and EOS included).

    Raises:
        SpecError: ``vocab_size < 5`` or ``max_length < 1``.
    """
    del unk_token_id  # part of the seed's parameters; hashing never needs it
    if vocab_size <= NUM_RESERVED_IDS:
        raise SpecError(f"vocab_size must be at least 5, got {vocab_size}")
    if max_length < 1:
        raise SpecError(f"max_length must be at least 1, got {max_length}")
    words = (text if case_sensitive else text.casefold()).split()
    ids = [bos_token_id, *(word_id(w, vocab_size) for w in words), eos_token_id]
    if len(ids) > max_length:
        ids = [*ids[: max_length - 1], eos_token_id]
    tokens = np.full(max_length, pad_token_id, dtype=np.int32)
    tokens[: len(ids)] = ids
    return tokens, len(ids)
