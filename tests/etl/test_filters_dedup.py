"""Filters and dedup: the rows they leave out go to the rejected table, named, and counted."""

from __future__ import annotations

import json
import shutil
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from tests.conftest import write_small_images

import datakiln
from datakiln.errors import SpecError
from datakiln.etl.bake import bake
from datakiln.etl.spec import BakeSpec, ImageParams

SIZE = 16

KEEP = '''
import jax.numpy as jnp


def dark(batch, limit=128.0):
    """Keep images whose mean pixel is below ``limit``."""
    return batch["images"].astype(jnp.float32).mean(axis=(1, 2, 3)) < limit
'''


def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> str:
    name = f"keep_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "code"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(folder))
    return name


def _spec(sources, out: Path, size: int = SIZE, **kw) -> BakeSpec:
    return BakeSpec(
        sources=tuple(str(s) for s in sources),
        output=str(out),
        shard_size=8,
        image=ImageParams(height=size, width=size),
        scheduler="threads",
        **kw,
    )


def _rejected(out: Path) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    return pq.read_table(out / manifest["rejected"]).to_pylist()


def _name(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    write_small_images(root, [f"{k:03d}.png" for k in range(20)], seed=3)
    return root


def test_a_jax_filter_rejects_exactly_its_rows_naming_itself(photos, tmp_path, monkeypatch):
    mod = write_module(tmp_path, monkeypatch, KEEP)
    bake(_spec([photos], tmp_path / "plain"))
    plain = datakiln.open_cache(str(tmp_path / "plain"), dtype="raw")
    names = [_name(u) for u in plain.metadata().column("uri").to_pylist()]
    means = plain.read_batch(np.arange(len(plain)))["images"].astype(np.float32).mean((1, 2, 3))
    limit = float(np.median(means))
    expected_out = sorted(n for n, m in zip(names, means, strict=True) if not m < limit)
    assert 0 < len(expected_out) < len(names)

    spec = _spec(
        [photos],
        tmp_path / "cache",
        filters=[{"function": f"{mod}:dark", "params": {"limit": limit}}],
    )
    report = bake(spec)
    assert report.inputs == 20 == report.baked + report.rejected
    assert report.filtered == len(expected_out)
    assert report.summary_line().endswith(f"({len(expected_out)} filtered, 0 duplicates)")
    rejected = _rejected(tmp_path / "cache")
    assert sorted(_name(r["uri"]) for r in rejected) == expected_out
    assert {(r["stage"], r["error_type"]) for r in rejected} == {("filter", f"{mod}:dark")}

    kept = datakiln.open_cache(str(tmp_path / "cache"), dtype="raw")
    kept_names = [_name(u) for u in kept.metadata().column("uri").to_pylist()]
    assert sorted(kept_names) == sorted(set(names) - set(expected_out))
    by_name = dict(zip(names, plain.read_batch(np.arange(len(plain)))["images"], strict=True))
    np.testing.assert_array_equal(
        kept.read_batch(np.arange(len(kept)))["images"], np.stack([by_name[n] for n in kept_names])
    )
    written = json.loads((tmp_path / "cache" / "report.json").read_text())
    assert written["filtered"] == len(expected_out)


def test_host_filters_on_image_metadata(photos, tmp_path):
    sizes = {p.name: Image.open(p).size for p in sorted(photos.iterdir())}
    small = sorted(n for n, (w, h) in sizes.items() if min(w, h) < 20)
    assert small
    report = bake(_spec([photos], tmp_path / "cache", filters=[{"min_side": 20}]))
    assert (report.baked, report.filtered) == (20 - len(small), len(small))
    rejected = _rejected(tmp_path / "cache")
    assert sorted(_name(r["uri"]) for r in rejected) == small
    assert all(r["error_type"] == "min_side" and "min_side = 20" in r["message"] for r in rejected)
    stats = json.loads((tmp_path / "cache" / "manifest.json").read_text())["stats"]
    assert stats["mean"]
    assert all(0 < m < 1 for m in stats["mean"])
    with pytest.raises(SpecError, match="min_chars reads the metadata of text bakes"):
        _spec([photos], tmp_path / "x", filters=[{"min_chars": 3}])


def test_exact_dedup_rejects_a_copy_also_in_an_append(photos, tmp_path):
    copies = tmp_path / "zcopies"  # listed after photos/: the copy comes second
    copies.mkdir()
    shutil.copy(photos / "004.png", copies / "again.png")
    out = tmp_path / "cache"
    report = bake(_spec([photos, copies], out, dedup="exact"))
    assert (report.baked, report.rejected, report.duplicates) == (20, 1, 1)
    (dup,) = _rejected(out)
    assert (dup["stage"], dup["error_type"], _name(dup["uri"])) == (
        "dedup",
        "Duplicate",
        "again.png",
    )
    row = int(dup["message"].split("duplicate of row ")[1].split()[0])
    assert dup["message"].endswith("004.png)")
    dataset = datakiln.open_cache(str(out), dtype="raw")
    meta = dataset.metadata().to_pylist()
    assert [_name(m["uri"]) for m in meta if m["row"] == row] == ["004.png"]

    # an incremental append: a new file equal to a baked row is rejected, naming that row
    shutil.copy(photos / "011.png", copies / "late.png")
    write_small_images(copies, ["fresh.png"], seed=99)
    report = bake(_spec([photos, copies], out, dedup="exact"))
    assert (report.baked, report.duplicates) == (21, 2)
    late = [r for r in _rejected(out) if _name(r["uri"]) == "late.png"]
    assert len(late) == 1
    assert late[0]["message"].endswith("011.png)")
    row = int(late[0]["message"].split("duplicate of row ")[1].split()[0])
    meta = datakiln.open_cache(str(out)).metadata().to_pylist()
    assert [_name(m["uri"]) for m in meta if m["row"] == row] == ["011.png"]
    assert "fresh.png" in {_name(m["uri"]) for m in meta}
    # the same command again does nothing
    assert bake(_spec([photos, copies], out, dedup="exact")).up_to_date


def _smooth_image(rng: np.random.Generator, size: int = 96) -> Image.Image:
    """A photo-like image: low-frequency colour fields, upsampled smoothly."""
    coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)


def test_near_dedup_rejects_a_reencoded_resized_copy_and_keeps_distinct_images(tmp_path):
    root = tmp_path / "near"
    root.mkdir()
    rng = np.random.default_rng(7)
    for k in range(24):
        _smooth_image(rng).save(root / f"{k:03d}.png")
    original = Image.open(root / "005.png").convert("RGB")
    copy = original.resize((88, 88), Image.Resampling.LANCZOS)  # slightly smaller
    copy.save(root / "zz_copy.jpg", quality=70)

    exact = bake(_spec([root], tmp_path / "exact", size=32, dedup="exact"))
    assert exact.duplicates == 0  # other bytes: not an exact copy
    report = bake(_spec([root], tmp_path / "cache", size=32, dedup="near"))
    assert (report.baked, report.duplicates) == (24, 1)
    (dup,) = _rejected(tmp_path / "cache")
    assert (dup["error_type"], _name(dup["uri"])) == ("NearDuplicate", "zz_copy.jpg")
    assert "near duplicate of row" in dup["message"]
    assert "005.png" in dup["message"]
    assert "pHash bits differ" in dup["message"]
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["counts"]["duplicates"] == 1
    assert manifest["rejected_by_reason"] == {"dedup: NearDuplicate": 1}


def test_near_dedup_of_text_finds_reworded_copies(tmp_path):
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
        "theta",
        "iota",
        "kappa",
        "lambda",
        "mu",
        "nu",
        "xi",
    ]
    rng = np.random.default_rng(1)
    lines = [" ".join(rng.choice(words, 12)) for _ in range(30)]
    copy = lines[4].split()
    copy[-1] = "omicron"  # one word of twelve changed
    lines.append(" ".join(copy))
    (tmp_path / "lines.txt").write_text("\n".join(lines) + "\n")
    spec = BakeSpec(
        sources=(str(tmp_path / "lines.txt"),),
        output=str(tmp_path / "cache"),
        modality="text",
        text={"max_length": 16},
        dedup="near",
        scheduler="threads",
    )
    report = bake(spec)
    assert (report.baked, report.duplicates) == (30, 1)
    (dup,) = _rejected(tmp_path / "cache")
    assert dup["error_type"] == "NearDuplicate"
    assert "Jaccard" in dup["message"]


def test_dedup_and_filter_specs_are_checked():
    with pytest.raises(SpecError, match="dedup must be 'exact' or 'near'"):
        BakeSpec(sources=("x",), output="y", dedup="fuzzy")
    with pytest.raises(SpecError, match="dedup_distance"):
        BakeSpec(sources=("x",), output="y", dedup="near", dedup_distance=64)
    with pytest.raises(SpecError, match="not both or neither"):
        BakeSpec(sources=("x",), output="y", filters=[{}])


RECORD_STEPS = """
import jax.numpy as jnp


def caption_features(batch):
    return {"brightness": batch["images"].astype(jnp.float32).mean(axis=(1, 2, 3))}


def long_caption(batch, words=6):
    return batch["captions_lengths"] > words
"""


def test_records_get_transforms_filters_and_dedup(tmp_path, monkeypatch):
    from datakiln.testing.records_corpus import write_records_corpus

    mod = write_module(tmp_path, monkeypatch, RECORD_STEPS)
    corpus = write_records_corpus(tmp_path / "records", n=12, per_tar=10)
    lines = corpus.csv.read_text().splitlines()
    longest = max(lines[1:], key=lambda line: len(line.split(",")[2].split()))
    corpus.csv.write_text("\n".join([*lines, longest]) + "\n")  # again, at the end
    spec = BakeSpec(
        sources=(str(corpus.csv),),
        output=str(tmp_path / "cache"),
        shard_size=8,
        fields={
            "images": {"modality": "image", "column": "image", "height": 8, "width": 8},
            "captions": {"modality": "text", "column": "caption", "max_length": 12},
        },
        transforms=[f"{mod}:caption_features"],
        filters=[{"function": f"{mod}:long_caption", "params": {"words": 6}}],
        dedup="exact",
        scheduler="threads",
    )
    report = bake(spec)
    assert report.inputs == 13 == report.baked + report.rejected
    dataset = datakiln.open_cache(str(tmp_path / "cache"))
    batch = dataset.read_batch(np.arange(len(dataset)))
    assert (batch["captions_lengths"] > 6).all()
    assert batch["brightness"].shape == (report.baked,)
    rejected = _rejected(tmp_path / "cache")
    filtered = [r for r in rejected if r["stage"] == "filter"]
    assert len(filtered) == report.filtered > 0
    assert {r["error_type"] for r in filtered} == {f"{mod}:long_caption"}
    assert all(r["record"] is not None for r in filtered)
    (dup,) = [r for r in rejected if r["stage"] == "dedup"]
    assert report.duplicates == 1
    first = dataset.metadata().to_pylist()
    row = int(dup["message"].split("duplicate of row ")[1].split()[0])
    assert [m["captions"] for m in first if m["row"] == row] == [longest.split(",")[2]]


def test_text_length_filters(tmp_path):
    lines = ["short", "a line long enough to keep", "tiny", "another line that is kept here"]
    (tmp_path / "lines.txt").write_text("\n".join(lines) + "\n")
    spec = BakeSpec(
        sources=(str(tmp_path / "lines.txt"),),
        output=str(tmp_path / "cache"),
        modality="text",
        filters=[{"min_chars": 10, "max_chars": 28}],
        scheduler="threads",
    )
    report = bake(spec)
    assert (report.baked, report.filtered) == (1, 3)
    reasons = sorted((r["error_type"], r["message"]) for r in _rejected(tmp_path / "cache"))
    assert reasons == [
        ("max_chars", "max_chars = 28: this input has 30"),
        ("min_chars", "min_chars = 10: this input has 4"),
        ("min_chars", "min_chars = 10: this input has 5"),
    ]
    assert datakiln.open_cache(str(tmp_path / "cache")).get_sample_text(0) == lines[1]


AUDIO_STEPS = '''
def energy(batch):
    """Mean power of the waveform: the batch holds it as read, float32 in [-1, 1]."""
    return {"energy": (batch["audio"] ** 2).mean(axis=1)}
'''


def test_audio_steps_see_float32_and_filter_by_duration(tmp_path, monkeypatch):
    import soundfile as sf

    mod = write_module(tmp_path, monkeypatch, AUDIO_STEPS)
    clips = tmp_path / "clips"
    clips.mkdir()
    for k, seconds in enumerate([0.3, 0.8, 1.5, 0.4, 1.2]):
        t = np.arange(int(16000 * seconds)) / 16000
        sf.write(clips / f"{k}.wav", 0.5 * np.sin(2 * np.pi * (300 + 100 * k) * t), 16000)
    spec = BakeSpec(
        sources=(str(clips),),
        output=str(tmp_path / "cache"),
        modality="audio",
        transforms=[f"{mod}:energy"],
        filters=[{"min_duration": 0.5}],
        scheduler="threads",
    )
    report = bake(spec)
    assert (report.baked, report.filtered) == (3, 2)
    assert sorted(_name(r["uri"]) for r in _rejected(tmp_path / "cache")) == ["0.wav", "3.wav"]
    dataset = datakiln.open_cache(str(tmp_path / "cache"))
    batch = dataset.read_batch(np.arange(3))
    assert batch["energy"].dtype == np.float32
    np.testing.assert_allclose(batch["energy"], (batch["audio"] ** 2).mean(axis=1), rtol=1e-5)
