"""Shared fixtures: strict JAX promotion, generated corpora, in-memory filesystems."""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture(scope="session")
def image_corpus(tmp_path_factory: pytest.TempPathFactory):
    """A 210-file corpus: mixed sizes, modes and formats, three classes, three broken files."""
    from datakiln.testing.image_corpus import write_image_corpus

    root = tmp_path_factory.mktemp("corpus")
    return write_image_corpus(root, n=207, seed=1, broken=3)


@pytest.fixture
def memory_root():
    """A unique ``memory://`` prefix, removed afterwards."""
    root = f"memory://datakiln-test-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    path = root.removeprefix("memory://")
    if fs.exists(path):
        fs.rm(path, recursive=True)


@pytest.fixture
def out_dir(tmp_path: Path) -> str:
    return str(tmp_path / "cache")


def write_small_images(root: Path, names: list[str], *, seed: int = 0) -> list[Path]:
    """Small random PNGs at ``root/name`` (folders created), distinct per name and seed."""
    import zlib

    import numpy as np
    from PIL import Image

    paths = []
    for name in names:
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        h, w = (int(v) for v in rng.integers(8, 40, 2))
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths
