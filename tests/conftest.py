"""Shared fixtures: strict JAX promotion, generated corpora, in-memory filesystems."""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture(scope="session")
def image_corpus(tmp_path_factory: pytest.TempPathFactory):
    """A 210-file corpus: mixed sizes, modes and formats, three classes, three broken files."""
    from datakiln.testing.image_corpus import write_image_corpus

    root = tmp_path_factory.mktemp("corpus")
    return write_image_corpus(root, n=207, seed=1, broken=3)


@pytest.fixture
def memory_root():
    """A unique ``memory://`` prefix, removed afterwards."""
    root = f"memory://datakiln-test-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    path = root.removeprefix("memory://")
    if fs.exists(path):
        fs.rm(path, recursive=True)


@pytest.fixture
def out_dir(tmp_path: Path) -> str:
    return str(tmp_path / "cache")


def write_small_images(root: Path, names: list[str], *, seed: int = 0) -> list[Path]:
    """Small random PNGs at ``root/name`` (folders created), distinct per name and seed."""
    import zlib

    import numpy as np
    from PIL import Image

    paths = []
    for name in names:
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        h, w = (int(v) for v in rng.integers(8, 40, 2))
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, timeout_s: float = 30.0) -> None:
    import time
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _moto_server(args: list[str]):
    """Run a moto server (``python`` + ``args`` + its port) on loopback; yield its URL."""
    import subprocess
    import sys

    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, *args, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{url}/moto-api/")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API on loopback: moto's standalone server in a subprocess."""
    yield from _moto_server(["-m", "moto.server", "-H", "127.0.0.1", "-p"])


# moto's server answering one request at a time: its conditional writes check and then put
# without a lock, so only a serial server is as atomic as S3's for the racing tests.
_SERIAL_MOTO = """
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.server import MotoRequestHandler
run_simple("127.0.0.1", int(sys.argv[1]), DomainDispatcherApplication(create_backend_app),
           threaded=False, request_handler=MotoRequestHandler)
"""


@pytest.fixture(scope="session")
def s3_serial_endpoint():
    """A moto server that serves requests one at a time (for compare-and-swap races)."""
    yield from _moto_server(["-c", _SERIAL_MOTO])


@pytest.fixture
def s3_serial_options(s3_serial_endpoint):
    """A fresh bucket on the serial moto server; yields (bucket URL, options)."""
    import s3fs

    options = {"key": "testing", "secret": "testing-secret-key", "endpoint_url": s3_serial_endpoint}
    bucket = f"dk-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(**options).mkdir(bucket)
    return f"s3://{bucket}", options


@pytest.fixture
def s3_options(s3_endpoint):
    """storage_options for a fresh bucket on the moto server; yields (bucket URL, options)."""
    import s3fs

    options = {"key": "testing", "secret": "testing-secret-key", "endpoint_url": s3_endpoint}
    bucket = f"dk-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir(bucket)
    fs.invalidate_cache()
    return f"s3://{bucket}", options


@pytest.fixture(scope="session")
def http_root(tmp_path_factory):
    """A folder served over HTTP by ``http.server`` on loopback: yields (folder, base URL)."""
    import functools
    import http.server
    import threading

    folder = tmp_path_factory.mktemp("http")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
