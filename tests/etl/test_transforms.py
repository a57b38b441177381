"""User transforms in image bakes: applied under jit, stored, read back, keyed by their code."""

from __future__ import annotations

import json
import sys
import textwrap
import uuid
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from tests.conftest import write_small_images

import datakiln
from datakiln.errors import BakeError, SpecError
from datakiln.etl.bake import bake, plan_only
from datakiln.etl.spec import BakeSpec, ImageParams

SIZE = 16

PREP = '''
import jax.numpy as jnp


def features(batch, scale=1.0):
    """Per-row channel means (float16) and the images flipped left-right."""
    x = batch["images"].astype(jnp.float32) * scale
    return {
        "means": x.mean(axis=(1, 2)).astype(jnp.float16),
        "flipped": batch["images"][:, :, ::-1, :],
    }


def brightness(batch):
    """Chained after features: it reads the field features wrote."""
    return {"brightness": batch["means"].astype(jnp.float32).mean(axis=1)}
'''


def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> str:
    """A fresh module holding ``source`` on sys.path; its (unique) name."""
    name = f"prep_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "code"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(folder))
    return name


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    write_small_images(root, [f"c{k % 2}/{k:03d}.png" for k in range(21)])
    (root / "c0" / "broken.png").write_bytes(b"not a png")
    return root


def _spec(photos: Path, out: Path, **kw) -> BakeSpec:
    return BakeSpec(
        sources=(str(photos),),
        output=str(out),
        shard_size=8,
        image=ImageParams(height=SIZE, width=SIZE),
        scheduler="threads",
        **kw,
    )


def test_a_transform_field_equals_the_function_on_the_baked_arrays(photos, tmp_path, monkeypatch):
    mod = write_module(tmp_path, monkeypatch, PREP)
    plain = bake(_spec(photos, tmp_path / "plain"))
    spec = _spec(
        photos,
        tmp_path / "cache",
        transforms=[
            {"function": f"{mod}:features", "params": {"scale": 0.5}},
            {"function": f"{mod}:brightness"},
        ],
    )
    report = bake(spec)
    assert report.summary_line() == "inputs 22 = baked 21 + rejected 1"
    # one compiled shape per transform and process, beside the resize kernel's buckets
    assert report.kernel_shapes == plain.kernel_shapes + 2

    dataset = datakiln.open_cache(str(tmp_path / "cache"), dtype="raw")
    assert sorted(dataset.field_names) == ["brightness", "flipped", "images", "means"]
    rows = np.arange(len(dataset))
    stored = dataset.read_batch(rows)
    images = stored["images"]
    assert images.dtype == np.uint8
    assert images.shape == (21, SIZE, SIZE, 3)
    expected = sys.modules[mod].features({"images": jnp.asarray(images)}, scale=0.5)
    assert stored["means"].dtype == np.float16
    assert stored["means"].shape == (21, 3)
    np.testing.assert_array_equal(stored["means"], np.asarray(expected["means"]))
    np.testing.assert_array_equal(stored["flipped"], images[:, :, ::-1, :])
    np.testing.assert_allclose(
        stored["brightness"], stored["means"].astype(np.float32).mean(axis=1), rtol=1e-6
    )
    # the images themselves are untouched and still read as float32 in [0, 1]
    reread = datakiln.open_cache(str(tmp_path / "cache")).read_batch(rows, fields=["images"])
    np.testing.assert_allclose(reread["images"], images / np.float32(255), atol=1e-6)
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["fields"]["means"]["dtype"] == "float16"
    assert manifest["fields"]["means"]["transform"] is None
    assert [t["function"] for t in manifest["user_steps"]["transforms"]] == [
        f"{mod}:features",
        f"{mod}:brightness",
    ]


def test_a_code_edit_changes_the_key_and_plan_names_it(photos, tmp_path, monkeypatch):
    mod = write_module(tmp_path, monkeypatch, PREP)
    spec = _spec(photos, tmp_path / "cache", transforms=[{"function": f"{mod}:brightness"}])
    with pytest.raises(BakeError, match="cannot be traced"):  # needs `means`: not stored
        bake(spec)
    spec = _spec(photos, tmp_path / "cache", transforms=[f"{mod}:features"])
    first = bake(spec)
    assert plan_only(spec).up_to_date

    path = tmp_path / "code" / f"{mod}.py"
    edited = PREP.replace("x.mean(axis=(1, 2))", "(x.max(axis=(1, 2)) + 0.0)")
    path.write_text(textwrap.dedent(edited))
    summary = plan_only(spec)
    assert not summary.up_to_date
    assert f"cache key differs: transform {mod}:features: code changed" in summary.lines()

    second = bake(spec)
    assert second.cache_key != first.cache_key
    dataset = datakiln.open_cache(str(tmp_path / "cache"), dtype="raw")
    batch = dataset.read_batch(np.arange(len(dataset)))
    np.testing.assert_array_equal(
        batch["means"], batch["images"].max(axis=(1, 2)).astype(np.float16)
    )
    # version and params are in the key too, and named
    bumped = _spec(
        photos, tmp_path / "cache", transforms=[{"function": f"{mod}:features", "version": "2"}]
    )
    assert f"cache key differs: transform {mod}:features: version None -> '2'" in (
        plan_only(bumped).lines()
    )


def _lambda_and_closure():
    scale = 2

    def closure(batch):
        return {"x": batch["images"] * scale}

    return (lambda batch: batch), closure


def test_lambdas_and_closures_are_refused(photos, tmp_path):
    lam, closure = _lambda_and_closure()
    with pytest.raises(SpecError, match="lambda or closure"):
        _spec(photos, tmp_path / "c", transforms=[lam])
    with pytest.raises(SpecError, match="lambda or closure"):
        _spec(photos, tmp_path / "c", transforms=[closure])
    with pytest.raises(SpecError, match="cannot import 'no_such_module_xyz'"):
        _spec(photos, tmp_path / "c", transforms=["no_such_module_xyz:f"]).key_dict()


def test_a_module_level_function_is_accepted_as_a_callable(photos, tmp_path, monkeypatch):
    mod = write_module(tmp_path, monkeypatch, PREP)
    __import__(mod)
    spec = _spec(photos, tmp_path / "c", transforms=[sys.modules[mod].features])
    assert spec.transforms[0].function == f"{mod}:features"
    assert spec.to_dict()["transforms"] == [
        {"function": f"{mod}:features", "version": None, "params": {}}
    ]


FAILING = """
import jax
import jax.numpy as jnp

BROKEN = True


def _detect(scores):
    if BROKEN:
        raise ValueError("the detector weights are missing")
    return scores


def risky(batch):
    \"\"\"Calls host code (as a detector would), which raises while the shard runs.\"\"\"
    score = batch["images"].astype(jnp.float32).mean(axis=(1, 2, 3))
    shape = jax.ShapeDtypeStruct(score.shape, score.dtype)
    return {"score": jax.pure_callback(_detect, shape, score)}


def untraceable(batch):
    raise ValueError("no such field: boxes")


def nan(batch):
    x = batch["images"].astype(jnp.float32).mean(axis=(1, 2, 3))
    return {"score": jnp.where(x > 0, jnp.nan, x)}


def short(batch):
    return {"score": batch["images"][:3].astype(jnp.float32).mean(axis=(1, 2, 3))}
"""


def test_a_raising_transform_stops_the_bake_and_the_same_command_resumes(
    photos, tmp_path, monkeypatch
):
    mod = write_module(tmp_path, monkeypatch, FAILING)
    spec = _spec(photos, tmp_path / "cache", transforms=[f"{mod}:risky"])
    with pytest.raises(BakeError) as err:
        bake(spec)
    message = str(err.value)
    assert f"transform {mod}:risky raised on shard" in message
    assert "ValueError: the detector weights are missing" in message
    assert not (tmp_path / "cache" / "manifest.json").exists()
    assert list((tmp_path / "cache").rglob("_shards/*.json")) == []  # every shard failed

    with pytest.raises(BakeError) as err:  # raising while traced: caught when planned
        bake(_spec(photos, tmp_path / "other", transforms=[f"{mod}:untraceable"]))
    assert f"transform {mod}:untraceable cannot be traced" in str(err.value)
    assert "ValueError: no such field: boxes" in str(err.value)

    path = tmp_path / "code" / f"{mod}.py"
    path.write_text(textwrap.dedent(FAILING).replace("BROKEN = True", "BROKEN = False  # fixed"))
    report = bake(spec)
    assert report.summary_line() == "inputs 22 = baked 21 + rejected 1"
    assert datakiln.open_cache(str(tmp_path / "cache")).read_batch([0])["score"].shape == (1,)


def test_nan_and_wrong_batch_length_are_caught_with_a_message(photos, tmp_path, monkeypatch):
    mod = write_module(tmp_path, monkeypatch, FAILING)
    with pytest.raises(BakeError, match=f"transform {mod}:nan returned NaN in field 'score' on "):
        bake(_spec(photos, tmp_path / "a", transforms=[f"{mod}:nan"]))
    assert not (tmp_path / "a" / "manifest.json").exists()
    with pytest.raises(BakeError, match="first axis must be the batch") as err:
        bake(_spec(photos, tmp_path / "b", transforms=[f"{mod}:short"]))
    assert f"{mod}:short" in str(err.value)
    # caught while planning: no shard ran, so no marker was written
    assert not list((tmp_path / "b").rglob("_shards/*.json"))


def test_transforms_load_from_a_toml_spec(photos, tmp_path, monkeypatch):
    mod = write_module(tmp_path, monkeypatch, PREP)
    toml = tmp_path / "spec.toml"
    toml.write_text(
        textwrap.dedent(
            f"""
            sources = ["{photos}"]
            output = "cache"
            shard_size = 8
            scheduler = "threads"

            [image]
            height = {SIZE}
            width = {SIZE}

            [[transforms]]
            function = "{mod}:features"
            version = "1"
            params = {{ scale = 0.5 }}
            """
        )
    )
    spec = BakeSpec.from_toml(toml)
    assert spec.transforms[0].params == {"scale": 0.5}
    assert spec.key_dict()["transforms"][0]["version"] == "1"
    report = bake(spec)
    assert report.baked == 21
    means = datakiln.open_cache(str(tmp_path / "cache")).read_batch([0])["means"]
    assert means.dtype == np.float16
    with pytest.raises(SpecError, match="unknown field 'param'"):
        BakeSpec(sources=("x",), output="y", transforms=[{"function": "a:b", "param": {}}])


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_a_cluster_gets_the_module_shipped_or_fails_fast_in_one_line(photos, tmp_path, monkeypatch):
    from distributed import Client, LocalCluster

    # started before the module exists on this process's path, so its worker cannot import it
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        mod = write_module(tmp_path, monkeypatch, PREP)
        with Client(cluster) as client:
            assert list(client.run(_importable, mod).values()) == [False]
        spec = BakeSpec(
            sources=(str(photos),),
            output=str(tmp_path / "cache"),
            shard_size=8,
            image=ImageParams(height=SIZE, width=SIZE),
            scheduler=cluster.scheduler_address,
            transforms=[f"{mod}:features"],
        )
        assert bake(spec).summary_line() == "inputs 22 = baked 21 + rejected 1"
        means = datakiln.open_cache(str(tmp_path / "cache")).read_batch([0])["means"]
        assert means.dtype == np.float16

        # a module of a namespace package (no __init__.py) cannot be shipped: one line, and
        # no shard starts
        space = tmp_path / "spaces"
        package = f"ns_{uuid.uuid4().hex[:8]}"
        (space / package).mkdir(parents=True)
        (space / package / "prep.py").write_text(textwrap.dedent(PREP))
        monkeypatch.syspath_prepend(str(space))
        other = BakeSpec(
            sources=(str(photos),),
            output=str(tmp_path / "other"),
            shard_size=8,
            image=ImageParams(height=SIZE, width=SIZE),
            scheduler=cluster.scheduler_address,
            transforms=[f"{package}.prep:features"],
        )
        with pytest.raises(BakeError) as err:
            bake(other)
    message = str(err.value)
    assert "\n" not in message
    assert f"user code {package}.prep:features: worker " in message
    assert "cannot import it" in message
    assert "no shard was started" in message
    assert not list((tmp_path / "other").rglob("_shards/*.json"))


def test_the_command_takes_transforms_filters_and_dedup(photos, tmp_path):
    import subprocess

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "datakiln", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,  # `python -m` puts this folder, and so the module, on the path
            timeout=300,
        )

    (tmp_path / "cliprep.py").write_text(textwrap.dedent(PREP))
    flags = [str(photos), "--out", "cache", "--size", str(SIZE), "--shard-size", "8"]
    steps = ["--transform", "cliprep:features", "--filter", "min_side=20", "--dedup", "exact"]
    result = run("bake", *flags, *steps)
    assert result.returncode == 0, result.stderr
    assert "filtered, 0 duplicates)" in result.stdout
    inspected = run("inspect", "cache")
    assert "transform cliprep:features" in inspected.stdout
    assert "dedup exact: 0 duplicates rejected" in inspected.stdout

    edited = PREP.replace("x.mean(axis=(1, 2))", "(x.min(axis=(1, 2)) + 0.0)")
    (tmp_path / "cliprep.py").write_text(textwrap.dedent(edited))
    planned = run("plan", *flags, *steps)
    assert "cache key differs: transform cliprep:features: code changed" in planned.stdout

    (tmp_path / "cliprep.py").write_text("def features(batch):\n    raise ValueError('oops')\n")
    failed = run("bake", *flags, *steps)
    assert failed.returncode == 1
    lines = [line for line in failed.stderr.splitlines() if line.startswith("datakiln:")]
    assert len(lines) == 1
    assert "transform cliprep:features cannot be traced" in lines[0]
    assert "Traceback" not in failed.stderr
