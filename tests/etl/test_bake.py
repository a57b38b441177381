"""End-to-end image bakes: counts, pixel fidelity against Pillow, stores, resume, no-op."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr
from PIL import Image

from datakiln.cache.open import open_cache
from datakiln.errors import OutputError, SourceError, TooManyRejectedError
from datakiln.etl.bake import bake
from datakiln.etl.spec import BakeSpec, ImageParams
from datakiln.readers.image import decode_image


def _pillow_reference(data: bytes, image: ImageParams) -> np.ndarray:
    """The same draft and conversion, resized by Pillow's own BILINEAR over the same box."""
    decoded = decode_image(
        data,
        representation=image.representation,
        height=image.height,
        width=image.width,
        fit=image.fit,
    )
    top, left, rh, rw = decoded.region
    pixels = decoded.pixels
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[pixels.shape[2]]
    src = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)
    resized = np.asarray(src.resize((rw, rh), Image.Resampling.BILINEAR, box=decoded.box))
    out = np.zeros((image.height, image.width, pixels.shape[2]), np.uint8)
    out[top : top + rh, left : left + rw] = resized.reshape(rh, rw, -1)
    return out


@pytest.fixture(scope="module")
def baked(image_corpus, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("baked") / "cache")
    spec = BakeSpec(
        sources=(str(image_corpus.root),),
        output=out,
        shard_size=64,
        image=ImageParams(height=32, width=32, labels="parent"),
    )
    return spec, bake(spec)


def test_counts_add_up_and_rejections_are_recorded(baked, image_corpus):
    spec, report = baked
    total = len(image_corpus.good) + len(image_corpus.broken)
    assert report.inputs == total
    assert report.baked == len(image_corpus.good)
    assert report.rejected == len(image_corpus.broken)
    assert report.summary_line() == f"inputs {total} = baked {report.baked} + rejected 3"
    manifest = json.loads((Path(spec.output) / "manifest.json").read_text())
    rejected = pq.read_table(Path(spec.output) / manifest["rejected"]).to_pylist()
    assert sorted(r["uri"].rsplit("/", 1)[1] for r in rejected) == sorted(
        Path(p).name for p in image_corpus.broken
    )
    assert all(r["stage"] and r["error_type"] and r["message"] for r in rejected)


def test_every_row_matches_pillow_within_one_level(baked):
    spec, report = baked
    dataset = open_cache(spec.output)
    meta = dataset.metadata().to_pylist()
    assert len(meta) == len(dataset) == report.baked
    path = dataset.manifest["fields"]["images"]["path"]
    images = zarr.open_array(spec.output, path=path, mode="r")
    worst = 0
    for index, row in enumerate(meta):
        source = Path(row["uri"].removeprefix("file://")).read_bytes()
        expected = _pillow_reference(source, spec.image)
        stored = images[row["row"]]
        diff = np.abs(stored.astype(int) - expected.astype(int)).max()
        worst = max(worst, int(diff))
        assert dataset.rows_of(np.array([index]))[0] == row["row"]
    assert worst <= 1, f"largest difference from Pillow: {worst} levels"


def test_manifest_records_schema_classes_and_stats(baked, image_corpus):
    spec, report = baked
    manifest = json.loads((Path(spec.output) / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["counts"] == {
        "inputs": report.inputs,
        "baked": report.baked,
        "rejected": report.rejected,
        "blank": 0,  # images are never blank; broken files are rejected otherwise
    }
    assert manifest["class_names"] == sorted(image_corpus.classes)
    images = manifest["fields"]["images"]
    assert (images["dtype"], images["shape"]) == ("uint8", [32, 32, 3])
    assert images["transform"]["scale"] == pytest.approx(1 / 255)
    assert all(0 < m < 1 for m in manifest["stats"]["mean"])
    stored = open_cache(spec.output).read_batch(np.arange(report.baked))["images"]
    mean = stored.mean(axis=(0, 1, 2), dtype=np.float64)
    np.testing.assert_allclose(manifest["stats"]["mean"], mean, rtol=1e-6)
    std = stored.std(axis=(0, 1, 2), dtype=np.float64)
    np.testing.assert_allclose(manifest["stats"]["std"], std, rtol=1e-6)
    assert len(manifest["shards"]) == -(-report.inputs // 64)
    # labels follow folder names
    dataset = open_cache(spec.output)
    meta = dataset.metadata().to_pylist()
    names = manifest["class_names"]
    for row in meta[:20]:
        assert names[row["label"]] == Path(row["uri"]).parent.name


def test_rebake_is_a_noop_and_a_changed_parameter_rebakes(baked):
    spec, report = baked
    again = bake(spec)
    assert again.up_to_date
    assert again.cache_key == report.cache_key
    assert again.summary_line() == report.summary_line()


def test_resume_skips_finished_shards(image_corpus, tmp_path):
    spec = BakeSpec(
        sources=(str(image_corpus.root),),
        output=str(tmp_path / "c"),
        shard_size=64,
        image=ImageParams(height=16, width=16),
    )
    first = bake(spec)
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    (tmp_path / "c" / "manifest.json").unlink()
    (tmp_path / "c" / manifest["shards"][1]["marker"]).unlink()
    second = bake(spec)
    assert second.shards_skipped == second.shards - 1
    assert second.summary_line() == first.summary_line()


def test_bake_from_and_to_memory(image_corpus, memory_root):
    fs = fsspec.filesystem("memory")
    src = f"{memory_root}/raw"
    for path in image_corpus.good[:20] + image_corpus.broken:
        p = Path(path)
        fs.pipe_file(f"{src}/{p.parent.name}/{p.name}", p.read_bytes())
    spec = BakeSpec(
        sources=(f"{src}/**",),
        output=f"{memory_root}/cache",
        shard_size=8,
        image=ImageParams(height=8, width=8, representation="grayscale", normalize=False),
    )
    report = bake(spec)
    assert (report.baked, report.rejected) == (20, len(image_corpus.broken))
    dataset = open_cache(spec.output, rngs=0)
    batch = dataset.get_batch(5)
    assert batch["images"].shape == (5, 8, 8, 1)
    assert batch["images"].min() >= -1
    assert batch["images"].max() <= 1


def test_max_rejected_fails_without_committing(image_corpus, tmp_path):
    spec = BakeSpec(
        sources=(str(image_corpus.root),),
        output=str(tmp_path / "c"),
        image=ImageParams(height=8, width=8),
        max_rejected=1,
    )
    with pytest.raises(TooManyRejectedError, match="max_rejected=1"):
        bake(spec)
    assert not (tmp_path / "c" / "manifest.json").exists()


def test_missing_source_and_unwritable_output(tmp_path, image_corpus):
    with pytest.raises(SourceError):
        bake(BakeSpec(sources=(str(tmp_path / "none" / "*.jpg"),), output=str(tmp_path / "c")))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError):
        bake(BakeSpec(sources=(str(image_corpus.good[0]),), output=str(blocker / "cache")))


def test_a_500_image_bake_compiles_a_handful_of_times(tmp_path):
    from datakiln.testing.image_corpus import write_image_corpus

    corpus = write_image_corpus(tmp_path / "raw", n=500, seed=5, broken=0)
    spec = BakeSpec(
        sources=(str(corpus.root),),
        output=str(tmp_path / "c"),
        shard_size=128,
        image=ImageParams(height=32, width=32),
    )
    report = bake(spec)
    assert report.baked == 500
    # a handful of canvas buckets, each one static signature (two compiles at most)
    assert 1 <= report.kernel_shapes <= 12, report.kernel_shapes
