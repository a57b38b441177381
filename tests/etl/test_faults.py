"""A flaky object store: throttling, server errors, resets, truncated bodies, latency and a
stall, injected by a loopback proxy in front of the moto server, for the bake and the reader."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import write_small_images
from tests.faultproxy import FaultProxy, Rule

from datakiln.cache.layout import store_fs
from datakiln.cache.open import open_cache
from datakiln.cache.verify import verify_cache
from datakiln.errors import DatakilnError
from datakiln.etl.bake import bake
from datakiln.etl.spec import BakeSpec, ImageParams

# Requests that carry the cache's content: shard writes (PUT) and shard reads (ranged GET).
SHARD_DATA = r"/g-[0-9a-f]+/(images|labels)/c/"
SMALL_OBJECTS = r"/(_lease|manifest)\.json"
# Short per-request timeouts, so that the stall costs seconds here (the defaults are 10/30 s).
FAST = {"connect_timeout": 2, "read_timeout": 2, "retries": {"mode": "standard", "max_attempts": 4}}


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    write_small_images(root, [f"k{k % 2}/{k:03d}.png" for k in range(16)])
    return root


@pytest.fixture
def proxy(s3_endpoint):
    proxy = FaultProxy(s3_endpoint)
    yield proxy
    proxy.close()


@pytest.fixture
def store(s3_options, proxy):
    """A fresh bucket reached through the proxy: (URL, storage_options)."""
    url, options = s3_options
    return f"{url}/cache", {**options, "endpoint_url": proxy.url, "config_kwargs": FAST}


def _spec(raw: Path, url: str, options: dict) -> BakeSpec:
    return BakeSpec(
        sources=(str(raw),),
        output=url,
        output_storage_options=options,
        shard_size=4,
        scheduler="threads",
        image=ImageParams(height=8, width=8, labels="parent"),
    )


@pytest.fixture(scope="module")
def expected(raw, tmp_path_factory) -> np.ndarray:
    out = str(tmp_path_factory.mktemp("ref") / "cache")
    bake(_spec(raw, out, {}))
    return open_cache(out).get_batch(indices=np.arange(16))["images"]


FAULTS = [
    Rule("503", times=3),
    Rule("500", times=3),
    Rule("reset", times=2),
    Rule("truncate", times=2),
    Rule("latency", times=4, delay_s=0.5),
    Rule("stall", times=1),
]


@pytest.mark.parametrize("rule", FAULTS, ids=lambda r: r.fault)
def test_bake_rides_out_a_transient_fault(rule, raw, store, proxy, expected):
    url, options = store
    # a PUT's answer has no body to truncate: that fault goes to the lease and manifest reads
    rule.method, rule.path = (
        ("GET", SMALL_OBJECTS) if rule.fault == "truncate" else ("PUT", SHARD_DATA)
    )
    proxy.rules = [rule]
    report = bake(_spec(raw, url, options))
    assert rule.injected == rule.times
    assert report.baked == 16
    # each error answer or timeout is a counted retry (a reset may be resent by aiohttp
    # unseen; latency below the timeout needs none)
    if rule.fault in ("503", "500", "stall", "truncate"):
        assert report.retries >= rule.times
    fs, root = store_fs(url, options)
    assert json.loads(fs.cat_file(f"{root}/report.json"))["retries"] == report.retries
    assert verify_cache(url, options).ok
    got = open_cache(url, storage_options=options).get_batch(indices=np.arange(16))["images"]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("rule", FAULTS, ids=lambda r: r.fault)
def test_reader_rides_out_a_transient_fault(rule, raw, store, proxy, expected):
    url, options = store
    bake(_spec(raw, url, options))
    dataset = open_cache(url, storage_options=options)
    rule.method, rule.path = "GET", SHARD_DATA
    proxy.rules = [rule]
    got = dataset.get_batch(indices=np.arange(16))["images"]
    assert rule.injected == rule.times
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("fault", ["503", "stall"])
def test_a_store_that_stays_down_fails_in_bounded_time(fault, raw, store, proxy):
    url, options = store
    # fewer, shorter attempts than FAST: giving up is what this test waits for
    options = {
        **options,
        "config_kwargs": {
            **FAST,
            "read_timeout": 1,
            "retries": {"mode": "standard", "max_attempts": 2},
        },
    }
    proxy.rules = [Rule(fault, method="PUT", path=SHARD_DATA, times=None)]
    started = time.monotonic()
    with pytest.raises(DatakilnError) as caught:
        bake(_spec(raw, url, options))
    assert time.monotonic() - started < 240
    message = str(caught.value)
    assert "run the same command again" in message
    proxy.rules = []
    assert bake(_spec(raw, url, options)).baked == 16  # and the rerun resumes
    assert verify_cache(url, options).ok


def test_a_conditional_write_whose_answer_was_lost_is_not_taken_for_a_lost_race(
    raw, store, proxy, expected
):
    """The lease and manifest PUTs land, then their answers are reset: the retried PUT fails
    its precondition against our own write, which must count as won, not as a rival's."""
    url, options = store
    proxy.rules = [Rule("reset", method="PUT", path=SMALL_OBJECTS, times=3)]
    report = bake(_spec(raw, url, options))
    assert proxy.injected() == 3
    assert report.baked == 16
    assert verify_cache(url, options).ok
    got = open_cache(url, storage_options=options).get_batch(indices=np.arange(16))["images"]
    np.testing.assert_array_equal(got, expected)


def test_source_reads_get_the_store_defaults_and_the_users_settings_win():
    from datakiln.cache.layout import S3_CONFIG

    spec = BakeSpec(sources=("s3://bucket/raw",), output="out", storage_options={"anon": True})
    assert spec.source_options == {"anon": True, "config_kwargs": S3_CONFIG}
    mine = {"config_kwargs": {"read_timeout": 5}}
    spec = BakeSpec(sources=("s3://bucket/raw",), output="out", storage_options=mine)
    assert spec.source_options["config_kwargs"] == {**S3_CONFIG, "read_timeout": 5}
    assert BakeSpec(sources=("raw",), output="out").source_options == {}


@pytest.mark.parametrize("fault", ["503", "reset", "truncate"])
def test_bake_rides_out_a_fault_reading_its_sources(
    fault, raw, s3_options, proxy, expected, tmp_path
):
    url, options = s3_options
    store_fs(url, options)[0].put(str(raw), f"{url[5:]}/raw", recursive=True)
    through_proxy = {**options, "endpoint_url": proxy.url}  # no config_kwargs: the defaults
    proxy.rules = [Rule(fault, method="GET", path=r"/raw/.*\.png", times=2)]
    spec = BakeSpec(
        sources=(f"{url}/raw",),
        output=str(tmp_path / "cache"),
        storage_options=through_proxy,
        shard_size=4,
        scheduler="threads",
        image=ImageParams(height=8, width=8, labels="parent"),
    )
    report = bake(spec)
    assert proxy.injected() == 2
    assert report.baked == 16
    assert report.rejected == 0
    got = open_cache(str(tmp_path / "cache")).get_batch(indices=np.arange(16))["images"]
    np.testing.assert_array_equal(got, expected)
