"""open_cache(local_dir=...): a bounded, shared local directory of a remote (S3) cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import write_small_images

from datakiln.cache.local_dir import PARTIAL, LocalLimitError
from datakiln.cache.open import open_cache
from datakiln.errors import ChecksumMismatchError, SpecError
from datakiln.etl.bake import bake
from datakiln.etl.spec import BakeSpec, ImageParams


@pytest.fixture(scope="module")
def local_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("local-dir")
    write_small_images(root / "raw", [f"c{k % 3}/{k:03d}.png" for k in range(120)])
    out = str(root / "cache")
    bake(
        BakeSpec(
            sources=(str(root / "raw"),),
            output=out,
            shard_size=16,
            image=ImageParams(height=12, width=10, labels="parent"),
        )
    )
    return out


def _upload(local: str, bucket: str, options: dict) -> str:
    import s3fs

    fs = s3fs.S3FileSystem(**options)
    for path in Path(local).rglob("*"):
        if path.is_file():
            fs.pipe_file(
                f"{bucket.removeprefix('s3://')}/cache/{path.relative_to(local)}", path.read_bytes()
            )
    return f"{bucket}/cache"


@pytest.fixture
def remote(local_cache, s3_options):
    bucket, options = s3_options
    return _upload(local_cache, bucket, options), options


def _files(folder: Path) -> dict[str, int]:
    """Every file's size, listed while holding the directory's lock (files are reserved,
    published and evicted under it, so the listing is one consistent state)."""
    import fcntl

    sizes = {}
    fd = os.open(folder / ".dir.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for parent, _, names in os.walk(folder):
            for name in names:
                sizes[os.path.join(parent, name)] = os.stat(os.path.join(parent, name)).st_size
    finally:
        os.close(fd)
    return sizes


def _image_objects(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("images/c/*/0/0/0") if p.is_file()]


def _shard_bytes(local_cache: str) -> int:
    return max(p.stat().st_size for p in _image_objects(Path(local_cache)))


def test_batches_through_local_dir_equal_the_local_cache(local_cache, remote, tmp_path):
    url, options = remote
    reference = open_cache(local_cache)
    mirrored = open_cache(
        url, storage_options=options, local_dir=str(tmp_path / "ld"), local_limit=10**7
    )
    rng = np.random.default_rng(0)
    for indices in [np.arange(len(reference)), rng.permutation(len(reference))[:37]]:
        want, got = reference.read_batch(indices), mirrored.read_batch(indices)
        assert sorted(want) == sorted(got)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    assert len(_image_objects(tmp_path / "ld")) == len(_image_objects(Path(local_cache)))
    assert mirrored.metadata().num_rows == len(reference)  # Parquet parts: from the store


def test_directory_stays_within_its_limit_and_is_reused(local_cache, remote, tmp_path):
    url, options = remote
    folder = tmp_path / "ld"
    shard = _shard_bytes(local_cache)
    limit = 4 * shard + 4096  # metadata, labels and about three image shard objects
    dataset = open_cache(url, storage_options=options, local_dir=str(folder), local_limit=limit)
    reference = open_cache(local_cache)
    rng = np.random.default_rng(1)
    for _ in range(12):
        start = int(rng.integers(0, len(reference) - 10))
        indices = np.arange(start, start + 10)
        np.testing.assert_array_equal(
            dataset.read_batch(indices)["images"], reference.read_batch(indices)["images"]
        )
        assert sum(_files(folder).values()) <= limit  # on disk, every file counted
    kept = {p: os.stat(p).st_ino for p in _image_objects(folder)}
    assert 1 <= len(kept) < len(_image_objects(Path(local_cache)))
    dataset.local.close()
    # reopened (a new process would do the same): what is there is read, not fetched again
    again = open_cache(url, storage_options=options, local_dir=str(folder), local_limit=limit)
    shard_rows = 16
    for path in kept:
        shard = int(Path(path).parts[-4])
        again.read_batch(np.arange(shard * shard_rows, shard * shard_rows + 2))
    assert {p: os.stat(p).st_ino for p in kept} == kept


def test_limit_smaller_than_one_window_is_refused_at_open(local_cache, remote, tmp_path):
    url, options = remote
    with pytest.raises(SpecError, match="smaller than one prefetch window"):
        open_cache(url, storage_options=options, local_dir=str(tmp_path), local_limit=3000)


def test_a_batch_wider_than_the_limit_says_so(local_cache, remote, tmp_path):
    url, options = remote
    limit = 3 * _shard_bytes(local_cache) + 4096
    dataset = open_cache(url, storage_options=options, local_dir=str(tmp_path), local_limit=limit)
    with pytest.raises(LocalLimitError, match="raise local_limit"):
        dataset.read_batch(np.arange(len(dataset)))
    assert not list(tmp_path.rglob(f"*{PARTIAL}"))
    dataset.read_batch(np.arange(5))  # and the directory still works


def test_new_version_does_not_read_old_objects(local_cache, remote, tmp_path):
    url, options = remote
    dataset = open_cache(url, storage_options=options, local_dir=str(tmp_path), local_limit=10**7)
    manifest = dataset.manifest
    assert Path(dataset.local.root).name == f"{manifest['cache_key'][:16]}-v{manifest['version']}"


def test_a_corrupted_object_is_refused(local_cache, s3_options, tmp_path):
    import s3fs

    bucket, options = s3_options
    url = _upload(local_cache, bucket, options)
    fs = s3fs.S3FileSystem(**options)
    key = sorted(fs.glob(f"{url.removeprefix('s3://')}/*/images/c/0/0/0/0"))[0]
    data = bytearray(fs.cat_file(key))
    data[10] ^= 0xFF
    fs.pipe_file(key, bytes(data))
    dataset = open_cache(url, storage_options=options, local_dir=str(tmp_path), local_limit=10**7)
    with pytest.raises(ChecksumMismatchError, match="checksum"):
        dataset.read_batch(np.arange(3))
    assert not list(tmp_path.rglob("images/c/0/0/0/0*"))


_CHILD = r"""
import json, logging, sys, time
import numpy as np
from datakiln.cache.open import open_cache
url, options, folder, limit, log, go = sys.argv[1:7]
handler = logging.FileHandler(log)
logger = logging.getLogger("datakiln.cache.local_dir")
logger.setLevel(logging.DEBUG)
logger.addHandler(handler)
dataset = open_cache(url, storage_options=json.loads(options), local_dir=folder,
                     local_limit=int(limit), dtype="raw")
while not __import__("os").path.exists(go):
    time.sleep(0.01)
for start in range(0, len(dataset), 8):
    dataset.read_batch(np.arange(start, min(start + 8, len(dataset))))
print(json.dumps(int(dataset.read_batch(np.arange(len(dataset)))["images"].sum())))
"""


def test_four_processes_share_one_directory_and_fetch_each_object_once(
    local_cache, remote, tmp_path
):
    url, options = remote
    folder, go = tmp_path / "ld", tmp_path / "go"
    logs = [tmp_path / f"log{k}" for k in range(4)]
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _CHILD,
                url,
                json.dumps(options),
                str(folder),
                "10000000",
                str(log),
                str(go),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for log in logs
    ]
    time.sleep(1.0)
    go.touch()
    outputs = [child.communicate(timeout=300)[0] for child in children]
    assert all(child.returncode == 0 for child in children)
    want = int(open_cache(local_cache, dtype="raw").read_batch(np.arange(120))["images"].sum())
    assert {int(o) for o in outputs} == {want}
    fetched = [
        line.split()[1]
        for log in logs
        for line in log.read_text().splitlines()
        if line.startswith("fetched ")
    ]
    assert len(fetched) == len(set(fetched))  # each object once, by one of the processes
    assert len(_image_objects(folder)) == len(_image_objects(Path(local_cache)))
    assert {name for name in fetched if "/images/c/" in name} == {
        str(p.relative_to(local_cache)) for p in _image_objects(Path(local_cache))
    }


_SLOW_CHILD = r"""
import json, sys, time
import numpy as np
import datakiln.cache.local_dir as local_dir
from datakiln.cache.open import open_cache
url, options, folder = sys.argv[1:4]
dataset = open_cache(url, storage_options=json.loads(options), local_dir=folder,
                     local_limit=10**7)
fs = dataset.local._fs
opener = fs.open
class Slow:
    def __init__(self, f): self.f = f
    def __enter__(self): return self
    def __exit__(self, *a): self.f.close()
    def read(self, n):
        data = self.f.read(100)
        time.sleep(60)  # killed here, the partial file half written
        return data
fs.open = lambda *a, **k: Slow(opener(*a, **k))
def slow_cat(*a, **k):  # objects this small come in one GET: killed before it returns
    time.sleep(60)
fs.cat_file = slow_cat
dataset.read_batch(np.arange(40))
"""


def test_sigkill_mid_download_leaves_nothing_that_breaks_the_next_run(
    local_cache, remote, tmp_path
):
    url, options = remote
    folder = tmp_path / "ld"
    child = subprocess.Popen(
        [sys.executable, "-c", _SLOW_CHILD, url, json.dumps(options), str(folder)]
    )
    deadline = time.monotonic() + 120
    while not list(folder.rglob(f"*{PARTIAL}")):
        assert child.poll() is None
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert list(folder.rglob(f"*{PARTIAL}"))
    reference = open_cache(local_cache)
    dataset = open_cache(url, storage_options=options, local_dir=str(folder), local_limit=10**7)
    indices = np.arange(len(reference))
    np.testing.assert_array_equal(
        dataset.read_batch(indices)["images"], reference.read_batch(indices)["images"]
    )
    dataset.local.usage()  # a scan removes partial files nobody is writing
    assert not list(folder.rglob(f"*{PARTIAL}"))


def test_loader_fetches_upcoming_shards_ahead_within_the_window(local_cache, remote, tmp_path):
    from datakiln.datasets.loader import BlockShuffle, Loader

    url, options = remote
    folder = tmp_path / "ld"
    shard = _shard_bytes(local_cache)
    limit = 6 * shard + 4096  # a window of about two objects: far less than the cache
    dataset = open_cache(url, storage_options=options, local_dir=str(folder), local_limit=limit)
    assert dataset.local_window < 8 * shard
    settings = {
        "batch_size": 8,
        "shuffle": BlockShuffle(block_size=16, window_size=16),
        "seed": 3,
        "num_epochs": 2,
    }
    want = list(Loader(open_cache(local_cache), **settings, prefetch=0))
    loader = Loader(dataset, **settings, prefetch=2)
    got = []
    ahead = set()
    plan = [b for e in range(2) for b in loader.epoch_indices(e)]
    for step, batch in enumerate(loader):
        got.append(batch)
        assert sum(_files(folder).values()) <= limit
        if step == 2:  # a slow training step: the next batches' objects arrive meanwhile
            upcoming = set(dataset.objects_of(plan[step + 3]))
            deadline = time.monotonic() + 30
            while not all((Path(dataset.local.root) / k).exists() for k in upcoming):
                assert time.monotonic() < deadline
                time.sleep(0.02)
            ahead = upcoming
    assert ahead
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a["indices"], b["indices"])
        np.testing.assert_array_equal(a["images"], b["images"])
    assert dataset.local.pinned_bytes() == dataset.local.resident_bytes()  # all released


def test_loader_over_a_too_narrow_window_says_what_to_do(local_cache, remote, tmp_path):
    from datakiln.datasets.loader import Loader

    url, options = remote
    shard = _shard_bytes(local_cache)
    dataset = open_cache(
        url, storage_options=options, local_dir=str(tmp_path), local_limit=6 * shard + 4096
    )
    with pytest.raises(SpecError, match="BlockShuffle"):
        list(Loader(dataset, batch_size=64, shuffle=True, num_epochs=1))


def test_breaking_out_of_a_loader_releases_every_pin(local_cache, remote, tmp_path):
    from datakiln.datasets.loader import BlockShuffle, Loader

    url, options = remote
    dataset = open_cache(url, storage_options=options, local_dir=str(tmp_path), local_limit=10**7)
    loader = Loader(dataset, 8, shuffle=BlockShuffle(block_size=16), seed=0, prefetch=2)
    for step, _ in enumerate(loader):
        if step == 3:
            break
    loader.close()
    assert dataset.local.pinned_bytes() == dataset.local.resident_bytes()
    assert not list(tmp_path.rglob(f"*{PARTIAL}"))  # no download left half done


def test_an_unpinned_object_keeps_its_lock_briefly_then_releases_it(local_cache, remote, tmp_path):
    """Consecutive batches reuse the shared lock of a just-released object; another process
    can evict it once the linger is over, and this process's own room-making releases it."""
    import fcntl

    from datakiln.cache import local_dir as local_dir_module

    url, options = remote
    dataset = open_cache(url, storage_options=options, local_dir=str(tmp_path), local_limit=10**7)
    local = dataset.local
    rel = dataset.objects_of(np.array([0]))[0]
    dataset.read_batch(np.array([0]))

    def lockable() -> bool:  # what another process's eviction attempt sees
        fd = os.open(local._lock_path(os.path.basename(local.root), rel), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    assert rel in local._idle
    assert not lockable()  # lingering: still shared-locked
    dataset.read_batch(np.array([1]))  # the same shard: pinned again without a new lock
    deadline = time.monotonic() + 10 * local_dir_module._LINGER_S
    while rel in local._idle and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rel not in local._idle
    assert lockable()  # released by the timer
    dataset.read_batch(np.array([0]))
    assert rel in local._idle
    need = local.limit - local.usage() + 1  # one byte more than fits: the object must go
    with local._dir_locked():
        local._make_room(need, exclude="")
    assert rel not in local._idle
    assert not (Path(local.root) / rel).exists()
    np.testing.assert_array_equal(  # fetched again on the next read
        dataset.read_batch(np.array([0]))["images"],
        open_cache(local_cache).read_batch([0])["images"],
    )
