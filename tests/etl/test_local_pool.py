"""The local worker-process pool: when it forks, where its workers run, what a bake gets."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from tests.conftest import write_small_images

from datakiln import BakeSpec, ImageParams, bake, open_cache
from datakiln.cache.verify import verify_cache
from datakiln.errors import BakeError, SpecError
from datakiln.etl.local_pool import start_method, worker_pool

several_cpus = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs a Linux machine with two CPUs or more",
)


def _python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return result.stdout.strip()


@pytest.mark.skipif(sys.platform != "linux", reason="forks only on Linux")
def test_forks_only_a_process_with_no_other_thread_and_no_jax_backend():
    out = _python(
        """
        import threading
        import datakiln
        from datakiln.etl.local_pool import start_method
        print(start_method())
        stop = threading.Event()
        other = threading.Thread(target=stop.wait)
        other.start()
        print(start_method(), start_method(parked=[other]))
        stop.set()
        other.join()
        import jax
        jax.devices()
        print(start_method())
        """
    )
    assert out.split() == ["fork", "forkserver", "fork", "forkserver"]


def _where(_: object = None) -> tuple[int, tuple[int, ...]]:
    time.sleep(0.05)  # long enough that every worker takes some of the tasks
    return os.getpid(), tuple(sorted(os.sched_getaffinity(0)))


@several_cpus
def test_workers_are_other_processes_pinned_one_per_cpu():
    cpus = sorted(os.sched_getaffinity(0))
    with worker_pool(len(cpus)) as pool:
        seen = dict(pool.map(_where, range(len(cpus) * 20)))
    assert os.getpid() not in seen
    assert len(seen) == len(cpus)
    assert sorted(c for pinned in seen.values() for c in pinned) == cpus


def _pid(_: int) -> int:
    return os.getpid()


def test_a_pool_smaller_than_the_machine_is_not_pinned():
    with worker_pool(1) as pool:
        pid = pool.submit(_pid, 0).result()
        affinity = pool.submit(_where).result()[1]
    assert pid != os.getpid()
    assert list(affinity) == sorted(os.sched_getaffinity(0))


def _frozen_objects() -> int:
    import gc

    return gc.get_freeze_count()


def test_workers_keep_their_imported_modules_out_of_the_collector():
    import gc

    with worker_pool(1, ["json"]) as pool:
        frozen = pool.submit(_frozen_objects).result()
    assert frozen > 10_000  # JAX and the modules named: never walked by a full collection
    assert gc.get_freeze_count() == 0  # the bake process (a user's) is left as it was


def test_a_pool_needs_a_worker():
    with pytest.raises(ValueError, match="at least one worker"), worker_pool(0):
        pass


@pytest.fixture(scope="module")
def many_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("many")
    write_small_images(root, [f"c{k % 3}/{k:03d}.png" for k in range(60)])
    (root / "c0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root


def _spec(source, out, **kw) -> BakeSpec:
    return BakeSpec(
        sources=(str(source),),
        output=str(out),
        shard_size=8,
        image=ImageParams(height=12, width=12),
        **kw,
    )


@several_cpus
def test_process_bake_equals_thread_bake(many_shards, tmp_path):
    threads = bake(_spec(many_shards, tmp_path / "t", scheduler="threads"))
    processes = bake(_spec(many_shards, tmp_path / "p", scheduler="processes"))
    assert (processes.baked, processes.rejected) == (threads.baked, threads.rejected) == (60, 1)
    assert processes.cache_key == threads.cache_key
    a, b = open_cache(str(tmp_path / "t")), open_cache(str(tmp_path / "p"))
    rows = np.arange(len(a))
    np.testing.assert_array_equal(
        a.get_batch(indices=rows)["images"], b.get_batch(indices=rows)["images"]
    )
    assert verify_cache(str(tmp_path / "p")).ok


@several_cpus
def test_cli_bake_forks_its_workers(many_shards, tmp_path):
    result = subprocess.run(
        [
            *(sys.executable, "-m", "datakiln", "bake", str(many_shards)),
            *("--out", str(tmp_path / "c"), "--size", "12", "--shard-size", "8"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    cpus = len(os.sched_getaffinity(0))
    assert f"{cpus} worker processes (fork), pinned to CPUs" in result.stderr
    assert "inputs 61 = baked 60 + rejected 1" in result.stdout


@several_cpus
def test_a_killed_worker_fails_the_bake_clearly_and_a_rerun_finishes_it(many_shards, tmp_path):
    out = tmp_path / "k"
    killed: list[int] = []

    def kill_a_worker(event):
        if not killed:
            worker = multiprocessing.active_children()[0]
            os.kill(worker.pid, signal.SIGKILL)
            killed.append(worker.pid)

    with pytest.raises(BakeError, match="worker process died"):
        bake(_spec(many_shards, out, scheduler="processes"), progress=kill_a_worker)
    assert killed
    report = bake(_spec(many_shards, out, scheduler="processes"))
    assert (report.baked, report.rejected) == (60, 1)
    assert 0 < report.shards_skipped < report.shards
    assert verify_cache(str(out)).ok
    assert len(open_cache(str(out))) == 60


def test_processes_cannot_reach_a_memory_filesystem(memory_root, many_shards):
    with pytest.raises(SpecError, match="worker processes cannot reach"):
        bake(_spec(many_shards, f"{memory_root}/c", scheduler="processes"))


def test_auto_bakes_a_memory_filesystem_on_threads(memory_root, many_shards):
    report = bake(_spec(many_shards, f"{memory_root}/c"))
    assert (report.baked, report.rejected) == (60, 1)


def test_no_pool_for_a_single_shard(many_shards, tmp_path, monkeypatch):
    import datakiln.etl.bake as bake_module

    def no_pool(*args, **kwargs):
        raise AssertionError("a one-shard bake must not start worker processes")

    monkeypatch.setattr(bake_module, "worker_pool", no_pool)
    spec = BakeSpec(
        sources=(str(many_shards),),
        output=str(tmp_path / "one"),
        shard_size=1024,
        image=ImageParams(height=12, width=12),
    )
    assert bake(spec).baked == 60


def test_the_pool_is_started_with_the_lease_heartbeat_parked(tmp_path, many_shards, monkeypatch):
    import datakiln.etl.bake as bake_module

    seen = {}
    real = bake_module.worker_pool

    def spy(workers, modules, parked):
        seen["parked"] = [t.name for t in parked]
        seen["method"] = start_method(parked)
        return real(workers, modules, parked=parked)

    monkeypatch.setattr(bake_module, "worker_pool", spy)
    monkeypatch.setattr(bake_module, "local_cpus", lambda: 2)
    bake(_spec(many_shards, tmp_path / "l", scheduler="processes"))
    assert seen["parked"] == ["datakiln-lease"]
    # Under pytest other threads run, so this is the fork server; alone, a bake forks
    # (test_cli_bake_forks_its_workers).
    others = [t for t in threading.enumerate() if t is not threading.current_thread()]
    assert seen["method"] == ("forkserver" if others else "fork")


@pytest.mark.parametrize(
    ("modality", "expected"), [("image", "processes"), ("text", "threads"), ("audio", "threads")]
)
def test_auto_takes_the_modalitys_choice_on_several_cpus(monkeypatch, modality, expected):
    import datakiln.etl.bake as bake_module

    spec = BakeSpec(sources=("raw/",), output="out/", modality=modality)
    monkeypatch.setattr(bake_module, "local_cpus", lambda: 2)
    assert bake_module._local_scheduler(spec, shards=8) == expected
    assert bake_module._local_scheduler(spec, shards=1) == "threads"
    # Where this process cannot fork safely, a pool would cost each bake its start-up.
    assert bake_module._local_scheduler(spec, shards=8, can_fork=False) == "threads"
    monkeypatch.setattr(bake_module, "local_cpus", lambda: 1)
    assert bake_module._local_scheduler(spec, shards=8) == "threads"


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


@several_cpus
def test_killing_the_bake_process_ends_its_workers(tmp_path):
    source = tmp_path / "raw"
    write_small_images(source, [f"{k:03d}.png" for k in range(400)])
    bake_process = subprocess.Popen(
        [
            *(sys.executable, "-m", "datakiln", "bake", str(source)),
            *("--out", str(tmp_path / "c"), "--size", "12", "--shard-size", "4"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in bake_process.stderr:
            if "worker processes (fork)" in line:
                break
        deadline = time.monotonic() + 30
        while len(workers := _children(bake_process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(workers) >= 2
    finally:
        bake_process.kill()
        bake_process.wait()
    deadline = time.monotonic() + 10
    while (alive := [w for w in workers if _running(w)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive, "worker processes outlived the killed bake"


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_auto_stays_on_threads_where_it_cannot_fork(many_shards, tmp_path, monkeypatch):
    import datakiln.etl.bake as bake_module

    def no_pool(*args, **kwargs):
        raise AssertionError("auto must not start a fork server's pool")

    monkeypatch.setattr(bake_module, "worker_pool", no_pool)
    monkeypatch.setattr(bake_module, "local_cpus", lambda: 2)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)  # a thread of the caller's: no fork now
    other.start()
    try:
        report = bake(_spec(many_shards, tmp_path / "a"))
    finally:
        stop.set()
        other.join()
    assert (report.baked, report.rejected) == (60, 1)
