"""Compressed image fields: every codec bakes, reads back (exactly, or within jpeg's bound),
stays readable by plain zarr-python, and is covered by ``verify``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

import datakiln
from datakiln.cache.inspect import describe_cache
from datakiln.cache.open import CachedDataset
from datakiln.cache.verify import verify_cache
from datakiln.datasets.loader import Loader
from datakiln.errors import CacheFormatError, SpecError
from datakiln.etl.bake import bake, listed_cache_key
from datakiln.etl.spec import BakeSpec, ImageParams

CODECS = ("none", "zstd", "blosc-lz4", "png", "jpeg")
LOSSLESS = ("zstd", "blosc-lz4", "png")
SIZE = 40
# jpeg at quality 90 on these smooth photographic-like images: measured 44.0 dB PSNR, max
# error 0.125 (32 levels of 255) at a 40x40 stretch; the bounds leave room for libjpeg versions
JPEG_MIN_PSNR_DB = 36.0
JPEG_MAX_ABS_ERROR = 0.2  # of the [0, 1] range


def _smooth_images(root: Path, n: int = 40) -> Path:
    """Gradients with a soft disc and mild noise, in two class folders: what a camera gives,
    roughly, and what jpeg is made for."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:64, 0:80].astype(np.float32)
    for i in range(n):
        base = rng.uniform(40, 200, 3).astype(np.float32)
        slope = rng.uniform(-1.2, 1.2, (2, 3)).astype(np.float32)
        image = base + yy[..., None] * slope[0] + xx[..., None] * slope[1]
        cy, cx, r = rng.uniform(16, 48), rng.uniform(16, 64), rng.uniform(6, 16)
        disc = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
        image = image * (1 - disc) + disc * rng.uniform(0, 255, 3)
        image += rng.normal(0, 2.0, image.shape)
        folder = root / ("cats" if i % 2 else "dogs")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return root


def _spec(sources: Path, out: Path, codec: str, quality: int = 90) -> BakeSpec:
    return BakeSpec(
        sources=(f"{sources}/*/*.png",),
        output=str(out),
        shard_size=16,
        scheduler="synchronous",
        image=ImageParams(height=SIZE, width=SIZE, labels="parent", codec=codec, quality=quality),
    )


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("codecs")
    sources = _smooth_images(root / "images")
    out = {}
    for codec in CODECS:
        out[codec] = root / f"cache-{codec}"
        bake(_spec(sources, out[codec], codec))
    out["sources"] = sources
    return out


def _all(path: Path, **kw) -> dict:
    dataset = CachedDataset(str(path), **kw)
    return dataset.read_batch(np.arange(len(dataset)))


def _images_path(cache: Path) -> Path:
    manifest = json.loads((cache / "manifest.json").read_text())
    return cache / manifest["fields"]["images"]["path"]


@pytest.mark.parametrize("codec", LOSSLESS)
def test_lossless_codecs_read_back_exactly(caches, codec):
    expected = _all(caches["none"])
    got = _all(caches[codec])
    np.testing.assert_array_equal(got["images"], expected["images"])
    np.testing.assert_array_equal(got["labels"], expected["labels"])


def test_jpeg_reads_back_within_its_stated_bound(caches):
    expected = _all(caches["none"])["images"]
    got = _all(caches["jpeg"])["images"]
    assert got.shape == expected.shape
    assert got.dtype == np.float32
    mse = float(np.mean((got - expected) ** 2))
    psnr = 10 * np.log10(1.0 / mse)
    assert psnr >= JPEG_MIN_PSNR_DB, psnr
    assert np.abs(got - expected).max() <= JPEG_MAX_ABS_ERROR
    assert mse > 0  # it is lossy: the pixels did go through jpeg


@pytest.mark.parametrize("codec", CODECS)
def test_fast_path_matches_zarr_python(caches, codec):
    fast = _all(caches[codec])
    reference = _all(caches[codec], fast=False)
    np.testing.assert_array_equal(fast["images"], reference["images"])
    # random order with repeats, as batches come
    dataset = CachedDataset(str(caches[codec]))
    picks = np.random.default_rng(3).integers(0, len(dataset), 50)
    np.testing.assert_array_equal(
        dataset.read_batch(picks)["images"], fast["images"][picks], strict=True
    )


def test_plain_zarr_reads_every_codec(caches):
    """A foreign reader: zarr finds the image codecs through datakiln's entry points."""
    paths = {codec: str(_images_path(caches[codec])) for codec in CODECS}
    script = (
        "import json, sys, zarr, numpy as np\n"
        "paths = json.loads(sys.argv[1])\n"
        "sums = {c: int(np.asarray(zarr.open_array(p, mode='r')[:], np.int64).sum())"
        " for c, p in paths.items()}\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('datakiln'))\n"
        "print(json.dumps({'sums': sums, 'loaded': loaded}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.splitlines()[-1])
    for codec in CODECS:
        stored = zarr.open_array(paths[codec], mode="r")[:]
        assert answer["sums"][codec] == int(stored.astype(np.int64).sum()), codec
        inner = json.loads((Path(paths[codec]) / "zarr.json").read_text())["codecs"][0]
        names = [c["name"] for c in inner["configuration"]["codecs"]]
        assert (
            names
            == {
                "none": ["bytes"],
                "zstd": ["bytes", "zstd"],
                "blosc-lz4": ["bytes", "blosc"],
                "png": ["imagecodecs_png"],
                "jpeg": ["imagecodecs_jpeg"],
            }[codec]
        )
    lossless = {answer["sums"][c] for c in ("none", *LOSSLESS)}
    assert len(lossless) == 1
    # the script imported only zarr: the image codecs came in through the entry points
    assert "datakiln.cache.chunk_codecs" in answer["loaded"]


def _first_chunk(cache: Path) -> tuple[Path, int, int]:
    """The first shard object of ``images``, and its first chunk's offset and size."""
    manifest = json.loads((cache / "manifest.json").read_text())
    marker = json.loads((cache / manifest["shards"][0]["marker"]).read_text())
    key = next(k for k, v in marker["checksums"].items() if "/images/" in k and v)
    data = (cache / key).read_bytes()
    rows = manifest["fields"]["images"]["shard_rows"]
    index = np.frombuffer(data[-4 - 16 * rows : -4], "<u8").reshape(rows, 2)
    return cache / key, int(index[0, 0]), int(index[0, 1])


@pytest.mark.parametrize("codec", CODECS)
def test_verify_catches_a_flipped_byte_in_a_compressed_chunk(caches, codec, tmp_path):
    cache = tmp_path / "copy"
    shutil.copytree(caches[codec], cache)
    assert verify_cache(str(cache)).ok
    target, offset, size = _first_chunk(cache)
    assert size > 0
    data = bytearray(target.read_bytes())
    data[offset + size // 2] ^= 0x10
    target.write_bytes(bytes(data))
    report = verify_cache(str(cache))
    assert not report.ok
    assert any("does not match its checksum" in p for p in report.problems)


def test_verify_reports_a_codec_that_disagrees_with_the_manifest(caches, tmp_path):
    cache = tmp_path / "copy"
    shutil.copytree(caches["jpeg"], cache)
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["fields"]["images"]["codec"] = "png"
    (cache / "manifest.json").write_text(json.dumps(manifest))
    problems = verify_cache(str(cache)).problems
    assert any("stored as jpeg, manifest says codec png" in p for p in problems)


def test_an_undecodable_chunk_is_a_clear_error(caches, tmp_path):
    cache = tmp_path / "copy"
    shutil.copytree(caches["jpeg"], cache)
    target, offset, size = _first_chunk(cache)
    data = bytearray(target.read_bytes())
    data[offset : offset + size] = b"\x00" * size
    target.write_bytes(bytes(data))
    dataset = CachedDataset(str(cache))
    with pytest.raises(CacheFormatError, match="run `datakiln verify`"):
        dataset.read_batch(np.arange(4))


def test_inspect_reports_the_disk_ratio_per_field(caches):
    ratios = {}
    for codec in CODECS:
        field = describe_cache(str(caches[codec]))["fields"]["images"]
        assert field["codec"] == codec
        assert field["disk_ratio"] == round(field["on_disk_bytes"] / field["in_memory_bytes"], 4)
        ratios[codec] = field["disk_ratio"]
    assert ratios["none"] > 0.95  # raw, plus the shard index
    assert ratios["jpeg"] < ratios["png"] < ratios["none"]
    assert ratios["jpeg"] < 0.35


def test_loader_over_a_jpeg_field(caches):
    dataset = datakiln.open_cache(str(caches["jpeg"]))
    reference = CachedDataset(str(caches["jpeg"]), fast=False)
    loader = Loader(dataset, 8, shuffle=True, seed=1, num_epochs=1, prefetch=3, num_threads=2)
    seen = []
    for batch in loader:
        indices = np.asarray(batch["indices"])
        expected = reference.read_batch(indices)
        np.testing.assert_array_equal(np.asarray(batch["images"]), expected["images"])
        np.testing.assert_array_equal(np.asarray(batch["labels"]), expected["labels"])
        seen.extend(indices.tolist())
    assert sorted(seen) == list(range(len(seen)))
    assert len(seen) == len(dataset) - len(dataset) % 8


def test_records_image_field_takes_a_codec(caches, tmp_path):
    sources = caches["sources"]
    table = tmp_path / "records.csv"
    files = sorted(sources.glob("*/*.png"))
    table.write_text("file,label\n" + "".join(f"{p},{p.parent.name}\n" for p in files))
    out = tmp_path / "records"
    fields = {
        "photo": {"modality": "image", "column": "file", "height": 24, "width": 24},
        "label": {"modality": "label"},
    }
    fields["photo"].update(codec="jpeg", quality=80)
    bake(BakeSpec(sources=(str(table),), output=str(out), shard_size=16, fields=fields))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["fields"]["photo"]["codec"] == "jpeg"
    assert manifest["fields"]["photo"]["quality"] == 80
    meta = json.loads((out / manifest["fields"]["photo"]["path"] / "zarr.json").read_text())
    inner = meta["codecs"][0]["configuration"]["codecs"]
    assert inner == [{"name": "imagecodecs_jpeg", "configuration": {"level": 80}}]
    dataset = datakiln.open_cache(str(out))
    batch = dataset.read_batch(np.arange(len(dataset)))
    assert batch["photo"].shape == (len(files), 24, 24, 3)
    np.testing.assert_array_equal(
        batch["photo"],
        CachedDataset(str(out), fast=False).read_batch(np.arange(len(files)))["photo"],
    )


def test_codec_and_quality_are_part_of_the_cache_key(caches, tmp_path):
    sources, out = caches["sources"], tmp_path / "unused"
    keys = {
        (codec, quality): listed_cache_key(_spec(sources, out, codec, quality))
        for codec, quality in [("none", 90), ("none", 50), ("png", 90), ("jpeg", 90), ("jpeg", 80)]
    }
    assert keys[("none", 90)] == keys[("none", 50)]  # quality means nothing without jpeg
    assert len({keys[k] for k in keys if k != ("none", 50)}) == 4
    # caches baked before codecs existed keep their key: `none` adds nothing to the key
    assert "codec" not in ImageParams().to_dict()
    assert "quality" not in ImageParams(codec="png").to_dict()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"codec": "webp"}, "image.codec must be one of"),
        ({"codec": "jpeg", "quality": 0}, "image.quality must be an integer in 1..100"),
        ({"codec": "jpeg", "representation": "rgba"}, "use 'png' for rgba"),
    ],
)
def test_bad_codec_settings_are_spec_errors(params, message):
    with pytest.raises(SpecError, match=message):
        ImageParams(**params)


def test_grayscale_and_rgba_round_trip(caches, tmp_path):
    for representation, codec in (("grayscale", "jpeg"), ("grayscale", "png"), ("rgba", "png")):
        out = tmp_path / f"{representation}-{codec}"
        params = {"height": 16, "width": 16, "representation": representation}
        spec = BakeSpec(
            sources=(f"{caches['sources']}/*/*.png",),
            output=str(out),
            scheduler="synchronous",
            image=ImageParams(**params, codec=codec),
        )
        bake(spec)
        raw = BakeSpec.from_dict({**spec.to_dict(), "output": str(tmp_path / f"raw-{out.name}")})
        raw = BakeSpec.from_dict({**raw.to_dict(), "image": {**params}})
        bake(raw)
        got, expected = _all(out)["images"], _all(Path(raw.output))["images"]
        assert got.shape == expected.shape == (40, 16, 16, 4 if representation == "rgba" else 1)
        bound = 0.2 if codec == "jpeg" else 0.0
        assert np.abs(got - expected).max() <= bound, (representation, codec)


def test_auto_codec_stores_small_images_raw_and_large_ones_compressed():
    assert ImageParams().codec == "auto"
    assert ImageParams().stored_codec == "none"  # 64 x 64 RGB: under the threshold
    assert ImageParams(height=127, width=128).stored_codec == "none"
    assert ImageParams(height=128, width=128).stored_codec == "jpeg"
    assert ImageParams(height=256, width=256, representation="rgba").stored_codec == "png"
    assert ImageParams(height=256, width=256, codec="none").stored_codec == "none"
    # the key records what is stored, so a new threshold would bake a new generation
    stored = ImageParams(height=256, width=256).to_dict()
    assert (stored["codec"], stored["quality"]) == ("jpeg", 90)
    assert ImageParams.from_dict(stored).stored_codec == "jpeg"


def test_auto_codec_bakes_a_large_image_field_as_jpeg(caches, tmp_path):
    out = tmp_path / "auto"
    bake(
        BakeSpec(
            sources=(f"{caches['sources']}/*/*.png",),
            output=str(out),
            scheduler="synchronous",
            image=ImageParams(height=128, width=128),
        )
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["fields"]["images"]["codec"] == "jpeg"
    assert len(datakiln.open_cache(str(out)).read_batch(np.arange(3))["images"]) == 3


def test_a_jpeg_field_reads_from_an_object_store(caches, memory_root):
    """Not a local disk: each batch's chunks come from one ``cat_ranges`` call, then decode."""
    url = f"{memory_root}/jpeg"
    bake(
        BakeSpec(
            sources=(f"{caches['sources']}/*/*.png",),
            output=url,
            shard_size=16,
            scheduler="synchronous",
            image=ImageParams(height=SIZE, width=SIZE, labels="parent", codec="jpeg"),
        )
    )
    remote = CachedDataset(url)
    picks = np.random.default_rng(5).integers(0, len(remote), 30)
    local = _all(caches["jpeg"])["images"]
    np.testing.assert_array_equal(remote.read_batch(picks)["images"], local[picks])
