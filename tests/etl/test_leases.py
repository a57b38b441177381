"""Store leases: dead holders taken over at once, other hosts' leases kept, forced take-over,
and compare-and-swap on S3."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tests.conftest import write_small_images

from datakiln.cache.manifest import read_manifest
from datakiln.cache.verify import verify_cache
from datakiln.errors import LeaseHeldError
from datakiln.etl.lease import StoreLease, holder_is_dead, process_start, this_process

# The default scheduler: image shards on worker processes forked from the bake.
BAKE_ARGS = ["--size", "8", "--shard-size", "4", "-q"]


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    write_small_images(root, [f"k{k % 3}/{k:03d}.png" for k in range(36)])
    (root / "k0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root


def _env(options: dict | None) -> dict[str, str]:
    env = dict(os.environ)
    if options:
        env.update(
            AWS_ACCESS_KEY_ID=options["key"],
            AWS_SECRET_ACCESS_KEY=options["secret"],
            AWS_ENDPOINT_URL=options["endpoint_url"],
            AWS_DEFAULT_REGION="us-east-1",
        )
    return env


def _bake_cmd(raw: Path, out: str) -> list[str]:
    return [sys.executable, "-m", "datakiln", "bake", str(raw), "--out", out, *BAKE_ARGS]


def _contents(out: str, options: dict | None) -> dict[str, str]:
    """The cache key and every content checksum of a committed store."""
    import fsspec

    manifest = read_manifest(out, options)
    fs, root = fsspec.core.url_to_fs(out, **(options or {}))
    sums = {"cache_key": manifest["cache_key"]}
    for shard in manifest["shards"]:
        sums.update(json.loads(fs.cat_file(f"{root}/{shard['marker']}"))["checksums"])
    return sums


def _dead_record(**changes) -> dict:
    """A lease record of this host whose process has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    me = this_process()
    record = {**me, "pid": proc.pid, "pid_start": process_start(proc.pid) or 1}
    proc.wait()
    now = time.time()
    record = {"started": now, "expires": now + 3600, **record, **changes}
    return {"owner": f"{record['host']}:{proc.pid}:dead", **record}


def test_liveness_of_a_holder_on_this_host():
    assert not holder_is_dead(this_process())
    assert holder_is_dead(_dead_record())
    # the pid alive, but started at another time: a reused pid, the holder is gone
    assert holder_is_dead({**this_process(), "pid_start": this_process()["pid_start"] - 1})
    # another host, boot or pid namespace: unknowable, so not dead
    for key in ("host", "boot", "pid_ns"):
        assert not holder_is_dead({**_dead_record(), key: "elsewhere"})
    assert not holder_is_dead({"owner": "old-record:1:x"})


def test_local_lease_is_a_kernel_lock(tmp_path):
    with StoreLease(str(tmp_path)) as held:
        other = StoreLease(str(tmp_path))
        with pytest.raises(LeaseHeldError, match=held.owner):
            other.acquire()
    with StoreLease(str(tmp_path)):
        pass
    assert not (tmp_path / "_lease.json").exists()


def test_lock_of_a_killed_holder_is_gone_with_it(tmp_path):
    code = (
        "import sys, time; from datakiln.etl.lease import StoreLease; "
        f"StoreLease({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(LeaseHeldError):
        StoreLease(str(tmp_path)).acquire()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((tmp_path / "_lease.json").read_text())["pid"] == proc.pid
    with StoreLease(str(tmp_path)) as lease:
        assert json.loads((tmp_path / "_lease.json").read_text())["owner"] == lease.owner


@pytest.mark.parametrize("store", ["local", "s3"])
def test_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(
    store, tmp_path, request, caplog
):
    url, options = _store(store, tmp_path, request)
    stale = _dead_record()
    _write_record(url, options, stale)
    caplog.set_level(logging.INFO, "datakiln.etl.lease")
    with StoreLease(url, options) as lease:
        assert lease.read()["owner"] == lease.owner
    assert f"from {stale['owner']} (that process is gone)" in caplog.text


@pytest.mark.parametrize("store", ["local", "s3"])
def test_lease_of_another_host_is_refused_until_its_ttl(store, tmp_path, request):
    url, options = _store(store, tmp_path, request)
    other = _dead_record(host="another-host")
    _write_record(url, options, other)
    with pytest.raises(LeaseHeldError, match="another-host"):
        StoreLease(url, options).acquire()
    _write_record(url, options, {**other, "expires": time.time() - 1})
    with StoreLease(url, options) as lease:
        assert lease.read()["owner"] == lease.owner


@pytest.mark.parametrize("store", ["local", "s3"])
def test_force_unlock_takes_a_live_lease_and_names_its_holder(store, tmp_path, request, caplog):
    url, options = _store(store, tmp_path, request)
    holder = StoreLease(url, options, ttl_s=0.3)
    holder.acquire()
    try:
        caplog.set_level(logging.WARNING, "datakiln.etl.lease")
        with StoreLease(url, options, force=True) as forced:
            assert forced.read()["owner"] == forced.owner
            assert f"took over the lease of {url} from {holder.owner}" in caplog.text
            deadline = time.monotonic() + 10
            while not holder.lost and time.monotonic() < deadline:
                time.sleep(0.05)
            assert holder.lost  # the old holder noticed at its next renewal
            assert forced.read()["owner"] == forced.owner
    finally:
        holder.release()


def test_force_unlock_from_the_command_line(raw, tmp_path):
    out = tmp_path / "cache"
    out.mkdir()
    with StoreLease(str(out)) as held:
        result = subprocess.run(
            [*_bake_cmd(raw, str(out)), "--force-unlock"], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert held.owner in result.stderr
    assert verify_cache(str(out)).ok


def test_racing_leases_on_s3_have_one_winner(s3_serial_options):
    url, options = s3_serial_options
    leases = [StoreLease(f"{url}/c", options) for _ in range(20)]
    won: list[StoreLease] = []
    barrier = threading.Barrier(len(leases))

    def race(lease: StoreLease) -> None:
        barrier.wait()
        try:
            lease.acquire()
            won.append(lease)
        except LeaseHeldError:
            pass

    threads = [threading.Thread(target=race, args=(lease,)) for lease in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert won[0].read()["owner"] == won[0].owner
    won[0].release()
    assert won[0].read() is None


@pytest.mark.parametrize("store", ["local", "s3"])
def test_killed_bake_resumes_at_once_with_identical_content(store, raw, tmp_path, request):
    """kill -9 at several moments, then the same command at once: no sleep, no lease editing."""
    url, options = _store(store, tmp_path, request)
    env = _env(options)
    reference = f"{url}/ref"
    subprocess.run(_bake_cmd(raw, reference), check=True, env=env, timeout=300)
    expected = _contents(reference, options)
    for k, delay in enumerate((1.0, 2.5)):
        out = f"{url}/run{k}"
        proc = subprocess.Popen(
            _bake_cmd(raw, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        subprocess.run(_bake_cmd(raw, out), check=True, env=env, timeout=300)
        assert _contents(out, options) == expected
        assert verify_cache(out, options).ok


def _store(kind: str, tmp_path: Path, request) -> tuple[str, dict | None]:
    if kind == "local":
        return str(tmp_path / "store"), None
    url, options = request.getfixturevalue("s3_options")
    return f"{url}/store", options


def _write_record(url: str, options: dict | None, record: dict) -> None:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url, **(options or {}))
    fs.makedirs(root, exist_ok=True)
    fs.pipe_file(f"{root}/_lease.json", json.dumps(record).encode())
