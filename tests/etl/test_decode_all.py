"""decode_all: every item decoded once, in order, on threads or in place."""

from __future__ import annotations

import threading

import pytest

from datakiln.etl.modalities import base


@pytest.mark.parametrize("cpus", [1, 2])
@pytest.mark.parametrize("n", [0, 5, base.DECODE_CHUNK + 1, 100])
def test_results_follow_the_items_order(monkeypatch, cpus, n):
    monkeypatch.setattr(base, "_usable_cpus", lambda: cpus)
    seen: list[int] = []
    lock = threading.Lock()

    def decode(x: int) -> int:
        with lock:
            seen.append(x)
        return x * x

    assert base.decode_all(decode, list(range(n))) == [x * x for x in range(n)]
    assert sorted(seen) == list(range(n))


def test_a_pinned_worker_decodes_on_its_own_thread(monkeypatch):
    monkeypatch.setattr(base, "_usable_cpus", lambda: 1)
    threads = set(base.decode_all(lambda _: threading.get_ident(), list(range(100))))
    assert threads == {threading.get_ident()}


def test_with_cpus_to_spare_the_decode_runs_on_threads(monkeypatch):
    monkeypatch.setattr(base, "_usable_cpus", lambda: 2)
    threads = set(base.decode_all(lambda _: threading.get_ident(), list(range(100))))
    assert threading.get_ident() not in threads


def test_an_error_in_a_decode_reaches_the_caller(monkeypatch):
    monkeypatch.setattr(base, "_usable_cpus", lambda: 2)

    def decode(x: int) -> int:
        if x == 40:
            raise ValueError("bad item 40")
        return x

    with pytest.raises(ValueError, match="bad item 40"):
        base.decode_all(decode, list(range(100)))
