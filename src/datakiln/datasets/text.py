"""Text datasets of the seed guide: ``SimpleTextDataset``, ``SyntheticTextDataset``.

Both tokenize with :func:`~datakiln.datasets.tokenize.word_hash_tokenize` under the config's
``metadata["text_params"]`` (:class:`~datakiln.datasets.configs.TextParams`), so token ids are
the same in every process. Batches hold:

* ``"text_tokens"``: int32 ``(B, max_length)``, ``[bos] + word ids + [eos]`` then padding
  (a truncated sequence still ends with eos);
* ``"text_lengths"``: int32 ``(B,)``, tokens before the padding;
* ``"texts"``: the ``B`` strings (``"text"`` in a sample);
* ``"indices"``: int64 ``(B,)`` (``"index"`` in a sample).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from datakiln.datasets import _lazy
from datakiln.datasets.base import BaseDataset
from datakiln.datasets.configs import ModalityConfiguration, TextParams
from datakiln.datasets.tokenize import word_hash, word_hash_tokenize
from datakiln.errors import SpecError

PATTERN_TYPES: tuple[str, ...] = (
    "random_sentences",
    "repeated_phrases",
    "sequences",
    "palindromes",
)

# The words synthetic sentences are made of (lowercase, so case folding leaves them alone).
_WORDS: tuple[str, ...] = (
    "the",
    "a",
    "one",
    "some",
    "every",
    "this",
    "that",
    "model",
    "data",
    "learning",
    "network",
    "deep",
    "neural",
    "layer",
    "signal",
    "image",
    "text",
    "audio",
    "sound",
    "word",
    "token",
    "vector",
    "matrix",
    "train",
    "test",
    "fast",
    "slow",
    "small",
    "large",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "cat",
    "bird",
    "tree",
    "river",
    "stone",
    "light",
    "dark",
    "red",
    "green",
    "blue",
    "bright",
    "quiet",
    "loud",
    "warm",
    "cold",
    "learns",
    "sees",
    "hears",
    "reads",
    "writes",
    "moves",
    "grows",
    "finds",
    "makes",
    "keeps",
    "and",
)
# Numbers "0" .. "_MAX_NUMBER - 1" follow the words in the inventory ("sequences" uses them).
_MAX_NUMBER = 1024
# Words per generated text before tokenization; every pattern stays within it.
_MAX_WORDS = 32


class _TextDatasetMixin(BaseDataset):
    """``get_sample_text`` and ``get_vocab_stats`` for datasets whose batches hold text."""

    params: TextParams

    def get_sample_text(self, index: int) -> str:
        """The original string of sample ``index``."""
        return str(self[index]["text"])

    def get_vocab_stats(self) -> dict[str, Any]:
        """Token statistics over the whole dataset (reads every sample once, in chunks).

        Returns:
            ``unique_tokens`` (distinct ids among real tokens, BOS/EOS included),
            ``vocab_coverage`` (that over ``vocab_size``), ``total_sequences``,
            ``max_length`` (the padded length) and ``mean_length`` (real tokens per sequence).
        """
        seen = np.zeros(self.params.vocab_size, dtype=bool)
        n = len(self)
        total = 0
        for start in range(0, n, 1024):
            batch = self.read_batch(np.arange(start, min(start + 1024, n), dtype=np.int64))
            tokens = np.asarray(batch["text_tokens"])
            lengths = np.asarray(batch["text_lengths"])
            real = np.arange(tokens.shape[1])[None, :] < lengths[:, None]
            seen[tokens[real]] = True
            total += int(lengths.sum())
        unique = int(seen.sum())
        return {
            "unique_tokens": unique,
            "vocab_coverage": unique / self.params.vocab_size,
            "total_sequences": n,
            "max_length": self.params.max_length,
            "mean_length": total / n if n else 0.0,
        }


class SimpleTextDataset(_TextDatasetMixin, BaseDataset):
    """A dataset over a list of strings, tokenized on read.

    Args:
        config: A :class:`ModalityConfiguration` whose ``metadata["text_params"]`` sets the
            tokenizer (defaults where missing).
        texts: The strings; sample ``i`` is ``texts[i]``.
        split: Split name.
        rngs: Seed source of ``get_batch``'s random draws.
    """

    def __init__(
        self,
        config: ModalityConfiguration | None = None,
        texts: Sequence[str] = (),
        split: str = "train",
        *,
        rngs: Any = None,
    ) -> None:
        super().__init__(config, split, rngs=rngs)
        self.params = TextParams.from_config(config)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise SpecError(
                f"texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}"
            )
        self.texts: tuple[str, ...] = tuple(texts)

    def __len__(self) -> int:
        return len(self.texts)

    def read_batch(self, indices: np.ndarray) -> dict[str, Any]:
        texts = [self.texts[int(i)] for i in indices]
        return _tokenized(texts, self.params, indices)


class SyntheticTextDataset(_TextDatasetMixin, BaseDataset):
    """Synthetic texts of one pattern type, generated lazily by index.

    Patterns (all from a fixed inventory of 62 common English words and the numbers 0-1023):

    * ``"random_sentences"``: 5-15 random words;
    * ``"repeated_phrases"``: a phrase of 2-4 random words, said 2-5 times;
    * ``"sequences"``: 5-20 numbers in arithmetic progression (start 0-511, step 1-5);
    * ``"palindromes"``: 3-16 words that read the same backwards (word by word).

    Word choices are drawn vectorised in JAX and turned into tokens through a per-word id
    table, which equals tokenizing the sample's string with ``word_hash_tokenize``.

    Args:
        config: Text config (``metadata["text_params"]``).
        dataset_size: Number of samples (nothing is stored).
        pattern_type: One of :data:`PATTERN_TYPES`.
        split: Split name.
        rngs: Seed source; one key for the content is drawn at construction.
    """

    def __init__(
        self,
        config: ModalityConfiguration | None = None,
        dataset_size: int = 1000,
        pattern_type: str = "random_sentences",
        split: str = "train",
        *,
        rngs: Any = None,
    ) -> None:
        super().__init__(config, split, rngs=rngs)
        if pattern_type not in PATTERN_TYPES:
            raise SpecError(f"pattern_type={pattern_type!r} is not one of {list(PATTERN_TYPES)}")
        self.params = TextParams.from_config(config)
        self.dataset_size = _lazy.check_size(dataset_size, "dataset_size")
        self.pattern_type = pattern_type
        self._key = self.rngs.key("default")
        self._inventory = np.array([*_WORDS, *(str(n) for n in range(_MAX_NUMBER))], dtype=object)
        hashes = np.array([word_hash(w) for w in self._inventory], dtype=np.uint64)
        self._word_ids = jnp.asarray((hashes % (self.params.vocab_size - 4) + 4).astype(np.int32))

    def __len__(self) -> int:
        return self.dataset_size

    def read_batch(self, indices: np.ndarray) -> dict[str, Any]:
        p = self.params
        words, counts, tokens, lengths = _lazy.render(
            _synthetic_text,
            self._key,
            indices,
            self._word_ids,
            pattern=self.pattern_type,
            max_length=p.max_length,
            pad=p.pad_token_id,
            bos=p.bos_token_id,
            eos=p.eos_token_id,
        )
        texts = [" ".join(self._inventory[w[:c]]) for w, c in zip(words, counts, strict=True)]
        return {
            "text_tokens": tokens,
            "text_lengths": lengths,
            "texts": texts,
            "indices": np.asarray(indices, dtype=np.int64),
        }


@functools.partial(jax.jit, static_argnames=("pattern", "max_length", "pad", "bos", "eos"))
def _synthetic_text(
    key: jax.Array,
    indices: jax.Array,
    word_ids: jax.Array,
    *,
    pattern: str,
    max_length: int,
    pad: int,
    bos: int,
    eos: int,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    draw = {
        "random_sentences": _random_sentence,
        "repeated_phrases": _repeated_phrase,
        "sequences": _number_sequence,
        "palindromes": _palindrome,
    }[pattern]
    words, counts = jax.vmap(draw)(_lazy.sample_keys(key, indices))
    tokens, lengths = _word_tokens(word_ids[words], counts, max_length, pad, bos, eos)
    return words, counts, tokens, lengths


def _word_tokens(
    ids: jax.Array, counts: jax.Array, max_length: int, pad: int, bos: int, eos: int
) -> tuple[jax.Array, jax.Array]:
    """``[bos] + ids[:count] + [eos]``, truncated keeping eos last, padded: as the tokenizer."""
    pos = jnp.arange(max_length)[None, :]
    length = jnp.minimum(counts + 2, max_length)[:, None]
    word = jnp.take_along_axis(ids, jnp.clip(pos - 1, 0, ids.shape[1] - 1), axis=1)
    seq = jnp.where(pos == 0, bos, word)
    tokens = jnp.where(pos < length - 1, seq, jnp.where(pos == length - 1, eos, pad))
    return tokens.astype(jnp.int32), length[:, 0].astype(jnp.int32)


# Each pattern draws everything with one uniform call: every random call site compiles to its
# own Threefry computation, and compilation dominates the cost of these tiny batches.


def _ints(u: jax.Array, low: int, high: int) -> jax.Array:
    """Uniform floats in [0, 1) to integers in [low, high)."""
    return jnp.minimum(low + jnp.floor(u * (high - low)).astype(jnp.int32), high - 1)


def _random_sentence(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    u = jax.random.uniform(key, (1 + _MAX_WORDS,))
    return _ints(u[1:], 0, len(_WORDS)), _ints(u[0], 5, 16)


def _repeated_phrase(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    u = jax.random.uniform(key, (6,))
    phrase_len = _ints(u[0], 2, 5)
    reps = _ints(u[1], 2, 6)
    phrase = _ints(u[2:], 0, len(_WORDS))
    return phrase[jnp.arange(_MAX_WORDS) % phrase_len], phrase_len * reps


def _number_sequence(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    u = jax.random.uniform(key, (3,))
    count = _ints(u[0], 5, 21)
    start = _ints(u[1], 0, 512)
    step = _ints(u[2], 1, 6)
    numbers = jnp.minimum(start + step * jnp.arange(_MAX_WORDS), _MAX_NUMBER - 1)
    return len(_WORDS) + numbers, count


def _palindrome(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    u = jax.random.uniform(key, (2 + _MAX_WORDS,))
    half = _ints(u[0], 2, 9)
    count = 2 * half - (u[1] < 0.5).astype(jnp.int32)
    words = _ints(u[2:], 0, len(_WORDS))
    pos = jnp.arange(_MAX_WORDS)
    mirrored = jnp.where(pos < half, pos, jnp.clip(count - 1 - pos, 0, _MAX_WORDS - 1))
    return words[mirrored], count


def _tokenized(texts: list[str], params: TextParams, indices: np.ndarray) -> dict[str, Any]:
    tokens = np.empty((len(texts), params.max_length), dtype=np.int32)
    lengths = np.empty(len(texts), dtype=np.int32)
    kwargs = params.to_dict()
    for row, text in enumerate(texts):
        tokens[row], lengths[row] = word_hash_tokenize(text, **kwargs)
    return {
        "text_tokens": tokens,
        "text_lengths": lengths,
        "texts": texts,
        "indices": np.asarray(indices, dtype=np.int64),
    }


def create_text_dataset(
    dataset_type: str = "synthetic",
    config: ModalityConfiguration | None = None,
    **kwargs: Any,
) -> BaseDataset:
    """Build a text dataset by type name.

    Args:
        dataset_type: ``"synthetic"`` (:class:`SyntheticTextDataset`) or ``"simple"``
            (:class:`SimpleTextDataset`, needs ``texts=``).
        config: The text config.
        **kwargs: The dataset's other arguments.

    Raises:
        SpecError: Unknown ``dataset_type``.
    """
    kinds = {"synthetic": SyntheticTextDataset, "simple": SimpleTextDataset}
    if dataset_type not in kinds:
        raise SpecError(f"dataset_type={dataset_type!r} is not one of {sorted(kinds)}")
    dataset: BaseDataset = kinds[dataset_type](config=config, **kwargs)
    return dataset
