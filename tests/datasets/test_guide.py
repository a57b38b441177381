"""Every Python block of the seed's data-loading guide runs against datakiln.

The guide (a verbatim copy in ``data/``, checked against ``shared/`` when it is there) is
parsed here and each ```` ```python ```` block is
rewritten mechanically, exactly as ``docs/seed-api.md`` describes:

* ``from artifex.<anything> import X`` becomes ``from datakiln.datasets import X``, and
  ``from flax import nnx`` becomes ``from datakiln.datasets import rngs as nnx`` (flax is not a
  dependency; a real ``nnx.Rngs`` works too);
* a top-level ``def``/``class`` of a name that datakiln provides (the guide's loaders,
  augmentations, ``split_dataset``, ...; :data:`PROVIDED`) is replaced by importing datakiln's;
* placeholders such as ``jnp.array([...])`` get small concrete values (:data:`PLACEHOLDERS`).

Nothing else changes. Names a block uses but an earlier block (or the prose) defines come from
:func:`context`, built from datakiln; a few blocks get smaller datasets where the guide's user
code is quadratic. Extra assertions after a block check what its comments promise.
"""

from __future__ import annotations

import ast
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datakiln.datasets as dk

# A verbatim copy of shared/seed/data-loading-guide.md (.txt so that formatters leave it alone).
GUIDE = Path(__file__).parent / "data" / "data-loading-guide.md.txt"

# Names the guide defines in its own code that datakiln.datasets provides.
PROVIDED = frozenset(
    {
        "TransformDataset",
        "augment_image",
        "augment_batch",
        "augment_batch_jit",
        "augment_text_tokens",
        "augment_text_batch",
        "augment_audio",
        "augment_audio_batch",
        "create_simple_data_loader",
        "create_multi_epoch_data_loader",
        "PrefetchDataLoader",
        "split_dataset",
        "create_training_pipeline",
        "create_multi_modal_loader",
        "pad_batch",
        "validate_sample",
        "ValidatedDataset",
    }
)

# Placeholder -> concrete value, by exact source text.
PLACEHOLDERS: dict[str, str] = {
    "raw_images = jnp.array([...])": (
        "raw_images = (jnp.arange(2 * 48 * 40 * 3) % 256).astype(jnp.uint8).reshape(2, 48, 40, 3)"
    ),
    "image_data = jnp.array([...])": (
        "image_data = jnp.linspace(0.0, 1.0, 4 * 8 * 8 * 3).reshape(4, 8, 8, 3)"
    ),
    "text_data = jnp.array([...])": (
        "text_data = jnp.arange(4 * 16, dtype=jnp.int32).reshape(4, 16) % 1000"
    ),
    "audio_data = jnp.array([...])": "audio_data = jnp.zeros((4, 160))",
    '"/path/to/image2.jpg", ...]': '"/path/to/image2.jpg", "/path/to/image3.jpg"]',
}


@dataclass(frozen=True)
class Block:
    number: int
    line: int
    heading: str
    source: str


def guide_blocks() -> list[Block]:
    lines = GUIDE.read_text().splitlines()
    blocks: list[Block] = []
    heading = ""
    i = 0
    while i < len(lines):
        if lines[i].startswith("#"):
            heading = lines[i].lstrip("# ").strip()
        if lines[i].strip() == "```python":
            j = i + 1
            while lines[j].strip() != "```":
                j += 1
            blocks.append(Block(len(blocks), i + 1, heading, "\n".join(lines[i + 1 : j])))
            i = j
        i += 1
    return blocks


def with_placeholders(source: str) -> str:
    """The block with its placeholders filled in."""
    for old, new in PLACEHOLDERS.items():
        source = source.replace(old, new)
    return source


def rewrite(source: str) -> str:
    """The block with placeholders filled in and datakiln imports (see the module doc)."""
    body: list[ast.stmt] = []
    for node in ast.parse(with_placeholders(source)).body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("artifex."):
            body.append(ast.ImportFrom("datakiln.datasets", node.names, 0))
        elif isinstance(node, ast.ImportFrom) and node.module == "flax":
            assert [a.name for a in node.names] == ["nnx"], ast.unparse(node)
            body.append(ast.ImportFrom("datakiln.datasets", [ast.alias("rngs", "nnx")], 0))
        elif isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name in PROVIDED:
            body.append(ast.ImportFrom("datakiln.datasets", [ast.alias(node.name)], 0))
        else:
            body.append(node)
    return ast.unparse(ast.fix_missing_locations(ast.Module(body, [])))


BLOCKS = guide_blocks()


def context(**sizes: int) -> dict[str, Any]:
    """What the blocks take from earlier blocks and the prose, made with datakiln."""
    from collections.abc import Iterator

    n = {"dataset": 10000, "train": 512, **sizes}
    rngs = dk.rngs.Rngs(0)
    config = dk.ImageModalityConfig(
        representation=dk.ImageRepresentation.RGB, height=32, width=32, normalize=True
    )
    text_config = dk.ModalityConfiguration(
        name="text",
        modality_type="text",
        metadata={
            "text_params": {
                "vocab_size": 10000,
                "max_length": 512,
                "pad_token_id": 0,
                "unk_token_id": 1,
                "bos_token_id": 2,
                "eos_token_id": 3,
                "case_sensitive": False,
            }
        },
    )
    audio_config = dk.AudioModalityConfig(
        sample_rate=16000, duration=1.0, n_mels=80, hop_length=512, normalize=True
    )
    dataset = dk.create_image_dataset(
        dataset_type="synthetic",
        config=config,
        pattern_type="gradient",
        dataset_size=n["dataset"],
        rngs=rngs,
    )
    train_dataset = dk.SyntheticImageDataset(config, n["train"], "random", rngs=rngs)
    return {
        "jax": jax,
        "jnp": jnp,
        "nnx": dk.rngs,
        "Iterator": Iterator,
        "BaseDataset": dk.BaseDataset,
        "BaseModalityConfig": dk.BaseModalityConfig,
        "rngs": rngs,
        "config": config,
        "text_config": text_config,
        "audio_config": audio_config,
        "dataset": dataset,
        "train_dataset": train_dataset,
        "base_dataset": train_dataset,
        "full_dataset": train_dataset,
        "raw_dataset": train_dataset,
        "kwargs": {"config": config, "rngs": rngs},
        "image_dataset": dk.SyntheticImageDataset(config, 256, "circles", rngs=rngs),
        "text_dataset": dk.SyntheticTextDataset(text_config, 256, rngs=rngs),
        "audio_dataset": dk.SyntheticAudioDataset(
            config=audio_config, n_samples=5000, audio_types=["sine", "noise"]
        ),
        "data_loader": dk.create_simple_data_loader(train_dataset, batch_size=128),
        "batch": train_dataset.get_batch(8),
    }


# Smaller datasets where the guide's own (user) code is quadratic in the dataset size.
SIZES: dict[int, dict[str, int]] = {23: {"dataset": 64}}


def run_block(number: int, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    block = BLOCKS[number]
    namespace = context(**SIZES.get(number, {}))
    # Block 27 clears JAX's caches every 100 batches; keep the suite's compilations.
    cleared: list[int] = []
    monkeypatch.setattr(jax, "clear_caches", lambda: cleared.append(1))
    namespace["__name__"] = f"guide_block_{number}"
    # The guide reads top to bottom: a block may use what earlier blocks imported.
    for earlier in BLOCKS[:number]:
        tree = ast.parse(rewrite(earlier.source))
        imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        exec(compile(ast.Module(imports, []), GUIDE.name, "exec"), namespace)
    code = compile(rewrite(block.source), f"{GUIDE.name}:{block.line}", "exec")
    exec(code, namespace)
    namespace["_cleared"] = cleared
    return namespace


# --- checks of what the blocks' comments promise ------------------------------------------------


def _quick_start(ns: dict[str, Any]) -> None:
    assert ns["batch"]["images"].shape == (32, 32, 32, 3)


def _synthetic_images(ns: dict[str, Any]) -> None:
    for name in ("random_dataset", "gradient_dataset", "checkerboard_dataset", "circles_dataset"):
        images = ns[name].get_batch(4)["images"]
        assert images.shape == (4, 32, 32, 3)
        assert images.min() >= 0.0
        assert images.max() <= 1.0
    assert ns["mnist_dataset"][0]["images"].shape == (28, 28, 1)
    assert len(ns["mnist_dataset"]) == 60000


def _iterating(ns: dict[str, Any]) -> None:
    assert ns["image"].shape == (32, 32, 3)
    assert ns["images"].shape == (128, 32, 32, 3)


def _arrays(ns: dict[str, Any]) -> None:
    out = ns["processed_images"]
    assert out.shape == (2, 32, 32, 3)
    assert out.dtype == jnp.float32
    assert float(out.min()) >= 0.0
    assert float(out.max()) <= 1.0


def _text_batch(ns: dict[str, Any]) -> None:
    assert ns["batch"]["text_tokens"].shape == (32, 512)
    assert len(ns["batch"]["texts"]) == 32


def _text_access(ns: dict[str, Any]) -> None:
    assert ns["sample_text"] == ns["text_dataset"].get_sample_text(0)
    stats = ns["stats"]
    assert set(stats) >= {"unique_tokens", "vocab_coverage", "total_sequences", "max_length"}
    assert stats["total_sequences"] == len(ns["text_dataset"])


def _audio(ns: dict[str, Any]) -> None:
    sample = ns["sample"]
    assert sample["audio"].shape == (16000,)
    assert sample["audio_type"] == "sine"
    assert sample["sample_rate"] == 16000
    assert sample["duration"] == 1.0


def _audio_batch(ns: dict[str, Any]) -> None:
    assert ns["batch"]["audio"].shape == (4, 16000)
    assert len(ns["batch"]["audio_type"]) == 4


def _multi_modal(ns: dict[str, Any]) -> None:
    sample = ns["sample"]
    assert sample["image"].shape == (32, 32, 3)
    assert sample["text"].shape == (50,)
    assert sample["audio"].shape == (16000,)
    assert sample["alignment_score"] == pytest.approx(0.8)
    assert sample["latent"].shape == (32,)


def _paired(ns: dict[str, Any]) -> None:
    sample = ns["sample"]
    assert sample["image"].shape == (8, 8, 3)
    assert sample["text"].shape == (16,)
    assert sample["audio"].shape == (160,)
    assert sample["alignment_scores"] == 1.0


def _custom(ns: dict[str, Any]) -> None:
    custom = ns["custom_dataset"]
    assert len(custom) == 3
    assert [s["path"] for s in custom] == ns["image_paths"]
    assert custom.get_batch(2)["images"].shape == (2, 32, 32, 3)
    # It only iterates, so in-order loading works and shuffled loading says what is missing.
    batches = list(dk.create_simple_data_loader(custom, 2, shuffle=False))
    assert [len(b["indices"]) for b in batches] == [2, 1]
    assert batches[1]["paths"] == ["/path/to/image3.jpg"]
    with pytest.raises(dk.RandomAccessError, match="read_batch"):
        dk.create_simple_data_loader(custom, 2, shuffle=True)


def _cached(ns: dict[str, Any], tmp_path: Path) -> None:
    cls = ns["CachedDataset"]
    data = cls(ns["config"], [jnp.full(3, i) for i in range(5)], str(tmp_path), rngs=ns["rngs"])
    assert [int(s["index"]) for s in data] == [0, 1, 2, 3, 4]
    assert data.get_batch(4)["data"].shape == (4, 3)
    train, val = dk.split_dataset(data, 0.6)
    assert sorted(int(s["index"]) for s in [*train, *val]) == [0, 1, 2, 3, 4]


def _transforms(ns: dict[str, Any]) -> None:
    transformed = ns["transformed_dataset"]
    assert transformed.get_batch(4)["images"].shape == (4, 32, 32, 3)
    assert next(iter(transformed))["images"].shape == (32, 32, 3)


def _augment(ns: dict[str, Any]) -> None:
    images = ns["augmented_batch"]["images"]
    assert images.shape[1:] == (32, 32, 3)
    same = ns["augment_batch_jit"](jnp.asarray(images), jax.random.key(1))
    assert same.shape == images.shape


def _text_augment(ns: dict[str, Any]) -> None:
    batch = {"text_tokens": jnp.array([[2, 10, 11, 12, 3, 0]] * 3, jnp.int32)}
    out = ns["augment_text_batch"](batch, 100, jax.random.key(0))["text_tokens"]
    assert out.shape == (3, 6)
    assert out.dtype == jnp.int32


def _audio_augment(ns: dict[str, Any]) -> None:
    batch = {"audio": jnp.sin(jnp.linspace(0.0, 50.0, 2 * 400)).reshape(2, 400)}
    out = ns["augment_audio_batch"](batch, 16000, jax.random.key(0))["audio"]
    assert out.shape == (2, 400)
    assert float(jnp.abs(out).max()) <= 1.0


def _multi_epoch(ns: dict[str, Any]) -> None:
    assert ns["epoch"] == 9


def _preprocess(ns: dict[str, Any]) -> None:
    assert ns["preprocessed_batch"]["images"].shape[1:] == (32, 32, 3)


def _vectorized(ns: dict[str, Any]) -> None:
    assert ns["preprocessed"].shape == (8, 32, 32, 3)


def _memory(ns: dict[str, Any]) -> None:
    data = ns["MemoryEfficientDataset"](ns["config"], ["a", "b", "c"], rngs=ns["rngs"])
    assert data.get_batch(2)["data"].shape == (2, 32, 32, 3)
    assert len(list(data)) == 3


def _cached_loader(ns: dict[str, Any]) -> None:
    assert ns["batch"]["images"].shape == (32, 32, 32, 3)


def _split(ns: dict[str, Any]) -> None:
    train, val = ns["train_dataset"], ns["val_dataset"]
    assert (len(train), len(val)) == (409, 103)
    assert not set(train.indices.tolist()) & set(val.indices.tolist())


def _pipeline(ns: dict[str, Any]) -> None:
    images = ns["batch"]["images"]
    assert images.shape == (128, 32, 32, 3)
    assert float(images.min()) >= 0.0
    assert float(images.max()) <= 1.0


def _multi_modal_loader(ns: dict[str, Any]) -> None:
    assert ns["batch"]["images"].shape == (64, 32, 32, 3)
    assert ns["batch"]["text_tokens"].shape == (64, 512)


def _memory_errors(ns: dict[str, Any]) -> None:
    assert ns["_cleared"], "the block clears caches at batch 0"
    half = ns["convert_to_float16"]({"images": jnp.ones((2, 2))})
    assert half["images"].dtype == jnp.float16


def _batch_sizes(ns: dict[str, Any]) -> None:
    padded = ns["pad_batch"](ns["train_dataset"].get_batch(5), 8)
    assert padded["images"].shape[0] == len(padded["indices"]) == 8
    assert padded["mask"].tolist() == [True] * 5 + [False] * 3


def _corruption(ns: dict[str, Any]) -> None:
    validated = ns["validated_dataset"]
    assert validated.get_batch(4)["images"].shape == (4, 32, 32, 3)
    assert ns["validate_sample"]({"images": jnp.zeros((32, 32, 3))})
    assert not ns["validate_sample"]({"images": jnp.full((32, 32, 3), jnp.nan)})


CHECKS: dict[int, Callable[..., None]] = {
    0: _quick_start,
    1: _synthetic_images,
    2: _iterating,
    3: _arrays,
    5: _text_batch,
    6: _text_access,
    7: _audio,
    8: _audio_batch,
    9: _multi_modal,
    10: _paired,
    11: _custom,
    12: _cached,
    13: _transforms,
    14: _augment,
    15: _text_augment,
    16: _audio_augment,
    18: _multi_epoch,
    20: _preprocess,
    21: _vectorized,
    22: _memory,
    23: _cached_loader,
    24: _split,
    25: _pipeline,
    26: _multi_modal_loader,
    27: _memory_errors,
    29: _batch_sizes,
    30: _corruption,
}


def test_the_copy_is_the_seed_guide() -> None:
    seed = Path(__file__).parents[3] / "shared" / "seed" / "data-loading-guide.md"
    if not seed.exists():
        pytest.skip(f"no seed guide at {seed}")
    assert GUIDE.read_bytes() == seed.read_bytes()


def test_the_guide_has_the_blocks_this_file_expects() -> None:
    assert len(BLOCKS) == 31
    assert BLOCKS[0].heading == "Quick Start"
    assert BLOCKS[30].heading == "Data Corruption"


def test_every_imported_name_is_exported() -> None:
    names = set()
    for block in BLOCKS:
        for node in ast.walk(ast.parse(block.source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("artifex."):
                names.update(alias.name for alias in node.names)
    assert names - set(dk.__all__) == set()
    assert PROVIDED - set(dk.__all__) == set()


def test_rewrite_changes_only_imports_and_provided_definitions() -> None:
    for block in BLOCKS:
        original = ast.parse(with_placeholders(block.source)).body
        rewritten = ast.parse(rewrite(block.source)).body
        assert len(original) == len(rewritten)
        for old, new in zip(original, rewritten, strict=True):
            if ast.unparse(new) != ast.unparse(old):
                assert isinstance(new, ast.ImportFrom)
                assert new.module == "datakiln.datasets"
                assert isinstance(old, ast.ImportFrom | ast.FunctionDef | ast.ClassDef)


@pytest.mark.parametrize("number", range(len(BLOCKS)), ids=[f"block{b.number:02d}" for b in BLOCKS])
def test_guide_block_runs(number: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    namespace = run_block(number, monkeypatch)
    check = CHECKS.get(number)
    if check is not None:
        if check.__code__.co_argcount == 2:
            check(namespace, tmp_path)
        else:
            check(namespace)


def test_prefetch_block_yields_every_sample_once(monkeypatch: pytest.MonkeyPatch) -> None:
    namespace = run_block(19, monkeypatch)
    loader = namespace["prefetch_loader"]
    seen = np.concatenate([b["indices"] for b in loader])
    np.testing.assert_array_equal(np.sort(seen), np.arange(len(namespace["train_dataset"])))


def test_nnx_stand_in_is_a_module_with_rngs() -> None:
    assert isinstance(dk.rngs, types.ModuleType)
    assert isinstance(dk.rngs.Rngs(0).sample(), jax.Array)
