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
