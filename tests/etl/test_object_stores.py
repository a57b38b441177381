"""Bakes from and to a real S3 API (moto's server) and raw files over HTTP."""

from __future__ import annotations

import numpy as np
import pytest
from tests.conftest import write_small_images

from datakiln.cache.open import open_cache
from datakiln.cache.verify import verify_cache
from datakiln.etl.bake import bake
from datakiln.etl.spec import BakeSpec, ImageParams


@pytest.fixture(scope="module")
def local_raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    paths = write_small_images(root, [f"c{k % 2}/{k:03d}.png" for k in range(24)])
    (root / "c1" / "bad.png").write_bytes(b"\x89PNG broken")
    return root, paths


def _upload(fs, root, bucket_path):
    for path in sorted(root.rglob("*.png")):
        fs.pipe_file(f"{bucket_path}/{path.parent.name}/{path.name}", path.read_bytes())


def test_bake_from_and_to_s3_and_read_back(local_raw, s3_options, tmp_path):
    import s3fs

    bucket, options = s3_options
    fs = s3fs.S3FileSystem(**options)
    _upload(fs, local_raw[0], f"{bucket.removeprefix('s3://')}/raw")
    spec = BakeSpec(
        sources=(f"{bucket}/raw/**/*.png",),
        output=f"{bucket}/cache",
        shard_size=8,
        storage_options=options,
        output_storage_options=options,
        image=ImageParams(height=8, width=8, labels="parent"),
    )
    report = bake(spec)
    assert report.summary_line() == "inputs 25 = baked 24 + rejected 1"
    assert bake(spec).up_to_date
    assert verify_cache(spec.output, options).ok

    local = bake(
        BakeSpec(
            sources=(str(local_raw[0]),),
            output=str(tmp_path / "l"),
            shard_size=8,
            image=ImageParams(height=8, width=8, labels="parent"),
        )
    )
    assert local.baked == 24
    remote_ds = open_cache(spec.output, storage_options=options)
    local_ds = open_cache(str(tmp_path / "l"))
    idx = np.arange(24)
    np.testing.assert_array_equal(
        remote_ds.get_batch(indices=idx)["images"], local_ds.get_batch(indices=idx)["images"]
    )


def test_s3_reads_are_ranged_not_whole_objects(local_raw, s3_options, monkeypatch):
    import s3fs

    bucket, options = s3_options
    fs = s3fs.S3FileSystem(**options)
    _upload(fs, local_raw[0], f"{bucket.removeprefix('s3://')}/raw")
    spec = BakeSpec(
        sources=(f"{bucket}/raw/**/*.png",),
        output=f"{bucket}/cache",
        shard_size=16,
        storage_options=options,
        output_storage_options=options,
        image=ImageParams(height=16, width=16),
    )
    bake(spec)
    dataset = open_cache(spec.output, storage_options=options)
    calls = []
    original = s3fs.S3FileSystem._cat_file

    async def recording(self, path, version_id=None, start=None, end=None, **kwargs):
        calls.append((path, start, end))
        return await original(self, path, version_id=version_id, start=start, end=end, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_cat_file", recording)
    batch = dataset.get_batch(indices=[0, 3, 17, 20])
    assert batch["images"].shape == (4, 16, 16, 3)
    shard_reads = [c for c in calls if "/images/c/" in c[0]]
    assert shard_reads, calls
    sample_bytes = 16 * 16 * 3
    assert all(start is not None and end is not None for _, start, end in shard_reads)
    assert all(
        end - start <= max(sample_bytes, 16 * 16 + 4) for _, start, end in shard_reads if start >= 0
    )


def test_aws_environment_supplies_credentials(local_raw, s3_options, monkeypatch):
    import s3fs

    bucket, options = s3_options
    _upload(s3fs.S3FileSystem(**options), local_raw[0], f"{bucket.removeprefix('s3://')}/raw")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", options["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", options["secret"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", options["endpoint_url"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3fs.S3FileSystem.clear_instance_cache()
    spec = BakeSpec(
        sources=(f"{bucket}/raw/c0/*.png",),
        output=f"{bucket}/env-cache",
        image=ImageParams(height=8, width=8),
    )
    assert bake(spec).baked == 12


def test_bake_raw_files_over_http(local_raw, http_root, tmp_path):
    folder, base = http_root
    for path in sorted(local_raw[0].rglob("*.png"))[:6]:
        (folder / path.name).write_bytes(path.read_bytes())
    urls = tuple(f"{base}/{p.name}" for p in sorted(folder.glob("*.png")))
    spec = BakeSpec(sources=urls, output=str(tmp_path / "h"), image=ImageParams(height=8, width=8))
    assert bake(spec).baked == 6
    globbed = BakeSpec(
        sources=(f"{base}/*.png",), output=str(tmp_path / "g"), image=ImageParams(height=8, width=8)
    )
    assert bake(globbed).baked == 6


def test_missing_credentials_give_one_actionable_line(s3_endpoint, tmp_path, monkeypatch):
    import subprocess
    import sys

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "datakiln",
            "bake",
            "s3://no-such-bucket/raw/*.jpg",
            "--out",
            str(tmp_path / "c"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("datakiln:")]
    assert len(lines) == 1
    assert "Traceback" not in result.stderr
    assert "credentials" in lines[0]
