"""The typed shapes of JSON results match what the code builds: describe_cache, pins, jobs."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import Any, NotRequired, get_origin, get_type_hints

import pytest
from tests.conftest import write_small_images

import datakiln
from datakiln.cache.inspect import (
    CacheDescription,
    FieldSummary,
    LengthPercentiles,
    RejectionSummary,
    VocabularySummary,
)
from datakiln.cache.pins import PINS_DIR, PinRecord
from datakiln.service.db import JobRecord, JobView, JobWatch


def _check_keys(value: dict[str, Any], shape: Any) -> None:
    """``value`` has every required key of the TypedDict ``shape`` and no key it lacks."""
    # Not shape.__required_keys__: under postponed annotations it counts NotRequired keys too.
    hints = get_type_hints(shape, include_extras=True)
    required = {k for k, v in hints.items() if get_origin(v) is not NotRequired}
    assert required <= set(value), required - set(value)
    assert set(value) <= set(hints), set(value) - set(hints)


@pytest.fixture(scope="module")
def image_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("typed")
    raw = root / "raw"
    write_small_images(raw, [f"{k:02d}.png" for k in range(6)])
    (raw / "broken.png").write_bytes(b"not an image")
    out = root / "image"
    spec = datakiln.BakeSpec(
        sources=(str(raw),),
        output=str(out),
        shard_size=4,
        image=datakiln.ImageParams(height=8, width=8),
    )
    datakiln.bake(spec)
    return out


@pytest.fixture(scope="module")
def text_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("typed_text")
    raw = root / "raw"
    raw.mkdir()
    (raw / "a.txt").write_text("one line\nanother line of words\n\nthe last line\n")
    out = root / "text"
    spec = datakiln.BakeSpec(
        sources=(str(raw),),
        output=str(out),
        modality="text",
        text={"max_length": 8, "vocab_size": 64},
        shard_size=4,
    )
    datakiln.bake(spec)
    return out


def test_an_image_cache_description_has_the_typed_keys(image_cache: Path) -> None:
    info = datakiln.inspect(str(image_cache))
    _check_keys(dict(info), CacheDescription)
    assert "vocabulary" not in info  # modality keys only where they belong
    for field in info["fields"].values():
        _check_keys(dict(field), FieldSummary)
    assert info["rejected"], "the broken file is rejected"
    for summary in info["rejected"].values():
        _check_keys(dict(summary), RejectionSummary)
        assert summary["count"] == len(summary["examples"]) == 1


def test_a_text_cache_description_has_the_typed_vocabulary(text_cache: Path) -> None:
    info = datakiln.inspect(str(text_cache))
    _check_keys(dict(info), CacheDescription)
    vocabulary = info["vocabulary"]
    _check_keys(dict(vocabulary), VocabularySummary)
    _check_keys(dict(vocabulary["length_percentiles"]), LengthPercentiles)
    assert vocabulary["total_sequences"] == info["counts"]["baked"] == 3


def test_a_reader_pin_has_the_typed_keys(image_cache: Path) -> None:
    dataset = datakiln.open_cache(str(image_cache))
    pins = sorted((image_cache / PINS_DIR).glob("v*.json"))
    assert pins, "opening a cache pins its version"
    record = json.loads(pins[-1].read_text())
    _check_keys(record, PinRecord)
    assert record["version"] == dataset.manifest["version"]


def test_a_job_view_has_the_typed_keys() -> None:
    record = JobRecord(
        id="j1",
        state="queued",
        spec={"sources": ["/data"]},
        output="/caches/x",
        cache_key="k",
        created=1.0,
        watch_interval_s=60.0,
    )
    view = record.to_dict()
    _check_keys(dict(view), JobView)
    assert view["watch"] is not None
    _check_keys(dict(view["watch"]), JobWatch)
    assert view["cache"] == "/caches/x"


def test_the_package_ships_its_type_marker() -> None:
    assert importlib.resources.files("datakiln").joinpath("py.typed").is_file()
