from __future__ import annotations

import dataclasses
import json

import pytest

from datakiln.errors import SpecError
from datakiln.etl.spec import BakeSpec, ImageParams


def test_round_trips_through_plain_json():
    spec = BakeSpec(
        sources=("a/*.jpg",),
        output="out",
        image=ImageParams(height=32, width=48, fit="pad"),
        shard_size=64,
        storage_options={"token": "secret"},
    )
    data = json.loads(json.dumps(spec.to_dict()))
    assert "secret" not in json.dumps(data)
    assert BakeSpec.from_dict(data) == dataclasses.replace(spec, storage_options={})


def test_toml_resolves_relative_paths(tmp_path):
    (tmp_path / "spec.toml").write_text(
        'sources = ["photos/*.jpg"]\noutput = "cache"\nshard_size = 8\n'
        '[image]\nheight = 16\nwidth = 16\nrepresentation = "grayscale"\n'
    )
    spec = BakeSpec.from_toml(tmp_path / "spec.toml")
    assert spec.sources == (str(tmp_path / "photos/*.jpg"),)
    assert spec.output == str(tmp_path / "cache")
    assert spec.image.channels == 1
    assert spec.shard_size == 8


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sources": ["x"], "output": "o", "shard_sise": 3}, "did you mean 'shard_size'"),
        ({"sources": ["x"], "output": "o", "image": {"heigth": 3}}, "did you mean 'height'"),
        ({"sources": ["x"], "output": "o", "image": {"fit": "zoom"}}, "image.fit must be one of"),
        ({"sources": ["x"], "output": "o", "shard_size": 0}, "shard_size must be a positive"),
        ({"sources": [], "output": "o"}, "sources must name"),
        ({"output": "o"}, "needs 'sources'"),
        ({"sources": ["x"], "output": "o", "scheduler": "gpu"}, "scheduler must be one of"),
    ],
)
def test_bad_specs_name_the_problem(data, message):
    with pytest.raises(SpecError, match=message):
        BakeSpec.from_dict(data)


def test_malformed_toml_is_a_spec_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("sources = [\n")
    with pytest.raises(SpecError, match="not valid TOML"):
        BakeSpec.from_toml(path)


def test_cache_key_ignores_output_and_scheduling_but_not_parameters(tmp_path):
    from datakiln.etl.plan import cache_key
    from datakiln.readers.listing import InputFile

    inputs = (InputFile("file:///a.jpg", 10, "mtime=1"),)
    base = BakeSpec(sources=("x",), output="o1")
    same = BakeSpec(sources=("y",), output="o2", scheduler="synchronous", workers=3)
    assert cache_key(base, inputs) == cache_key(same, inputs)
    other = dataclasses.replace(base, image=ImageParams(height=65))
    assert cache_key(base, inputs) != cache_key(other, inputs)
    touched = (InputFile("file:///a.jpg", 10, "mtime=2"),)
    assert cache_key(base, inputs) != cache_key(base, touched)


@pytest.mark.parametrize("count", [0, 1, 3, 4, 7])
def test_cache_key_hashed_in_slices_is_the_fingerprint_of_the_whole_listing(count, monkeypatch):
    """Keys of caches baked before the listing was hashed slice by slice stay the same."""
    import datakiln.etl.plan as plan
    from datakiln.cache.fingerprint import fingerprint
    from datakiln.readers.listing import InputFile

    monkeypatch.setattr(plan, "_KEY_SLICE", 3)
    spec = BakeSpec(sources=("x",), output="o")
    inputs = tuple(
        InputFile(f'file:///{k}/\u00e9"\\\t.jpg', k, f"mtime={k}.5") for k in range(count)
    )
    whole = {"generation": plan.generation_key(spec), "inputs": [i.to_dict() for i in inputs]}
    assert plan.cache_key(spec, inputs) == fingerprint(whole)
