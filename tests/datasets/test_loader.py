"""Loader: epoch coverage, deterministic order, hosts, resume, threads, block shuffle."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import datakiln.datasets as dk
from datakiln.errors import SpecError


def _indices(batches: Any) -> list[list[int]]:
    return [np.asarray(b["indices"]).tolist() for b in batches]


def _one_host(**kw: Any) -> dict[str, Any]:
    return {"shard_index": 0, "shard_count": 1, **kw}


# --- order ----------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 300), seed=st.integers(0, 2**40), epoch=st.integers(0, 1000))
def test_epoch_order_is_a_permutation_and_a_pure_function(n: int, seed: int, epoch: int) -> None:
    order = dk.epoch_order(n, seed=seed, epoch=epoch)
    assert order.dtype == np.int64
    np.testing.assert_array_equal(np.sort(order), np.arange(n))
    np.testing.assert_array_equal(order, dk.epoch_order(n, seed=seed, epoch=epoch))
    if n >= 20:
        assert not np.array_equal(order, dk.epoch_order(n, seed=seed, epoch=epoch + 1))
        assert not np.array_equal(order, dk.epoch_order(n, seed=seed + 1, epoch=epoch))


def test_epoch_order_is_pinned() -> None:
    # A pure function of (seed, epoch, n): these values must never change between versions.
    assert dk.epoch_order(10, seed=0, epoch=0).tolist() == [3, 2, 1, 8, 6, 0, 7, 4, 5, 9]
    assert dk.epoch_order(10, seed=0, epoch=1).tolist() == [7, 4, 5, 1, 9, 8, 6, 2, 0, 3]
    assert dk.epoch_order(5, seed=0, epoch=0, shuffle=False).tolist() == [0, 1, 2, 3, 4]


def test_epoch_order_rejects_negative_seeds() -> None:
    with pytest.raises(SpecError, match="seed"):
        dk.epoch_order(3, seed=-1, epoch=0)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 200),
    block=st.integers(1, 20),
    window=st.integers(1, 60),
    seed=st.integers(0, 1000),
)
def test_block_shuffle_is_a_local_permutation(n: int, block: int, window: int, seed: int) -> None:
    shuffle = dk.BlockShuffle(block_size=block, window_size=window)
    order = dk.epoch_order(n, seed=seed, epoch=0, shuffle=shuffle)
    np.testing.assert_array_equal(np.sort(order), np.arange(n))
    # Every window of positions touches at most ceil(window / block) + 1 blocks, one more if
    # the final, shorter block is among them.
    short = (n - 1) // block if n % block else -1
    for start in range(0, n, window):
        blocks = set((order[start : start + window] // block).tolist())
        assert len(blocks) <= -(-window // block) + 1 + (short in blocks)
    np.testing.assert_array_equal(order, dk.epoch_order(n, seed=seed, epoch=0, shuffle=shuffle))


def test_block_shuffle_defaults_and_checks() -> None:
    assert dk.BlockShuffle(block_size=4).window == 64
    order = dk.epoch_order(
        20, seed=1, epoch=0, shuffle=dk.BlockShuffle(block_size=5, window_size=1)
    )
    blocks = order.reshape(4, 5)
    assert all(list(b) == list(range(b[0], b[0] + 5)) for b in blocks), "blocks stay whole"
    with pytest.raises(SpecError, match="block_size"):
        dk.BlockShuffle(block_size=0)


# --- coverage and determinism -------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 120),
    batch_size=st.integers(1, 40),
    drop_last=st.booleans(),
    shuffle=st.sampled_from([True, False, dk.BlockShuffle(block_size=3, window_size=7)]),
    seed=st.integers(0, 10),
)
def test_each_epoch_visits_every_sample_once(
    counting: Any, n: int, batch_size: int, drop_last: bool, shuffle: Any, seed: int
) -> None:
    data = counting(n)
    loader = dk.Loader(
        data,
        batch_size,
        shuffle=shuffle,
        seed=seed,
        num_epochs=2,
        drop_last=drop_last,
        prefetch=0,
        **_one_host(),
    )
    epochs: dict[int, list[int]] = {0: [], 1: []}
    sizes = []
    for epoch, batch in loader.iter_with_epoch():
        epochs[epoch].extend(batch["indices"].tolist())
        sizes.append(len(batch["indices"]))
    for seen in epochs.values():
        assert len(seen) == len(set(seen))
        if drop_last:
            assert len(seen) == n - n % batch_size
        else:
            assert sorted(seen) == list(range(n))
    assert all(s == batch_size for s in sizes[: len(loader)][:-1])
    if drop_last:
        assert set(sizes) <= {batch_size}
    assert len(loader) == (n // batch_size if drop_last else -(-n // batch_size))
    assert loader.epoch == 2
    assert loader.step == 0


def test_same_seed_same_order_other_epoch_other_order(counting: Any) -> None:
    data = counting(50)

    def run(seed: int) -> list[list[int]]:
        return _indices(dk.Loader(data, 10, seed=seed, num_epochs=2, **_one_host()))

    first = run(3)
    assert first == run(3)
    assert first[:5] != first[5:], "epochs differ"
    assert sorted(np.concatenate(first[:5]).tolist()) == list(range(50))
    assert sorted(np.concatenate(first[5:]).tolist()) == list(range(50))
    assert first != run(4)


@pytest.mark.parametrize("num_threads", [1, 2, 5])
def test_order_does_not_depend_on_threads_or_prefetch(counting: Any, num_threads: int) -> None:
    data = counting(103)
    reference = _indices(dk.Loader(data, 8, seed=1, num_epochs=2, prefetch=0, **_one_host()))
    threaded = dk.Loader(
        data, 8, seed=1, num_epochs=2, prefetch=3, num_threads=num_threads, **_one_host()
    )
    assert _indices(threaded) == reference


# --- hosts -------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(0, 150),
    batch_size=st.integers(1, 12),
    hosts=st.integers(1, 5),
    drop_last=st.booleans(),
    seed=st.integers(0, 5),
)
def test_hosts_get_disjoint_slices_that_cover_the_epoch(
    counting: Any, n: int, batch_size: int, hosts: int, drop_last: bool, seed: int
) -> None:
    data = counting(n)
    per_host = [
        dk.Loader(
            data,
            batch_size,
            seed=seed,
            drop_last=drop_last,
            num_epochs=1,
            prefetch=0,
            shard_index=h,
            shard_count=hosts,
        ).epoch_indices(0)
        for h in range(hosts)
    ]
    seen = [int(i) for batches in per_host for b in batches for i in b]
    assert len(seen) == len(set(seen))
    global_batch = batch_size * hosts
    if drop_last:
        assert len(seen) == n - n % global_batch
        assert len({len(b) for b in per_host}) <= 1, "hosts take the same number of steps"
    else:
        assert sorted(seen) == list(range(n))
    # Step s of all hosts together is global batch s of the one global order.
    order = dk.epoch_order(n, seed=seed, epoch=0)
    for step in range(n // global_batch):
        joined = np.concatenate([batches[step] for batches in per_host])
        np.testing.assert_array_equal(
            joined, order[step * global_batch : (step + 1) * global_batch]
        )


def test_default_shard_comes_from_jax(counting: Any) -> None:
    loader = dk.Loader(counting(10), 2)
    assert (loader.shard_index, loader.shard_count) == (jax.process_index(), jax.process_count())
    with pytest.raises(SpecError, match="shard_index"):
        dk.Loader(counting(10), 2, shard_index=2, shard_count=2)


# --- state and resume ---------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 60),
    batch_size=st.integers(1, 9),
    drop_last=st.booleans(),
    stop_after=st.integers(0, 30),
    prefetch=st.sampled_from([0, 2]),
)
def test_resume_mid_epoch_equals_an_uninterrupted_run(
    counting: Any, n: int, batch_size: int, drop_last: bool, stop_after: int, prefetch: int
) -> None:
    data = counting(n)
    settings_ = {"seed": 5, "num_epochs": 3, "drop_last": drop_last, **_one_host()}
    full = _indices(dk.Loader(data, batch_size, prefetch=0, **settings_))
    first = dk.Loader(data, batch_size, prefetch=prefetch, **settings_)
    head: list[list[int]] = []
    iterator = iter(first)
    for batch in iterator:
        head.append(batch["indices"].tolist())
        if len(head) == stop_after:
            break
    state = json.loads(json.dumps(first.state()))
    first.close()
    resumed = dk.Loader(data, batch_size, prefetch=prefetch, **settings_)
    resumed.restore(state)
    assert head + _indices(resumed) == full


def test_state_contents_and_epoch_boundaries(counting: Any) -> None:
    loader = dk.Loader(counting(10), 4, seed=2, drop_last=False, prefetch=0, **_one_host())
    it = iter(loader)
    next(it)
    state = loader.state()
    assert state == {
        "version": 1,
        "seed": 2,
        "epoch": 0,
        "step": 1,
        "num_samples": 10,
        "batch_size": 4,
        "shard_index": 0,
        "shard_count": 1,
        "drop_last": False,
        "shuffle": "full",
        "dataset": None,
    }
    next(it)
    next(it)
    assert (loader.state()["epoch"], loader.state()["step"]) == (1, 0)


def test_restore_refuses_a_different_setup(counting: Any) -> None:
    loader = dk.Loader(counting(10), 4, prefetch=0, **_one_host())
    next(iter(loader))
    state = loader.state()
    with pytest.raises(SpecError, match="batch_size"):
        dk.Loader(counting(10), 5, **_one_host()).restore(state)
    with pytest.raises(SpecError, match="num_samples"):
        dk.Loader(counting(11), 4, **_one_host()).restore(state)
    with pytest.raises(SpecError, match="shuffle"):
        dk.Loader(counting(10), 4, shuffle=False, **_one_host()).restore(state)
    with pytest.raises(SpecError, match="seed"):
        dk.Loader(counting(10), 4, seed=1, **_one_host()).restore(state)
    with pytest.raises(SpecError, match="version"):
        loader.restore({"epoch": 0})


def test_restore_on_another_number_of_hosts_at_a_whole_global_batch(counting: Any) -> None:
    data = counting(48)
    one = dk.Loader(data, 4, seed=1, num_epochs=1, **_one_host())
    head = [b["indices"] for b in list(one)[:4]]  # 16 samples
    one_state = dk.Loader(data, 4, seed=1, num_epochs=1, **_one_host())
    one_state.restore({**one.state(), "epoch": 0, "step": 4})
    rest = []
    for h in range(2):
        two = dk.Loader(data, 4, seed=1, num_epochs=1, shard_index=h, shard_count=2)
        two.restore(one_state.state())
        assert two.step == 2
        rest.append(_indices(two))
    joined = [i for pair in zip(*rest, strict=True) for b in pair for i in b]
    assert np.concatenate(head).tolist() + joined == dk.epoch_order(48, seed=1, epoch=0).tolist()
    odd = dk.Loader(data, 4, seed=1, shard_index=0, shard_count=2)
    with pytest.raises(SpecError, match="global batch"):
        odd.restore({**one.state(), "epoch": 0, "step": 3})


# --- threads ------------------------------------------------------------------------------------


def _loader_threads() -> int:
    return sum(t.name.startswith("datakiln-loader") for t in threading.enumerate())


def _wait_for_no_threads() -> None:
    deadline = time.monotonic() + 5
    while _loader_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _loader_threads() == 0


def test_threads_stop_on_break_close_and_exhaustion(counting: Any) -> None:
    data = counting(100)
    loader = dk.Loader(data, 5, num_epochs=None, prefetch=4, num_threads=3, **_one_host())
    for i, _ in enumerate(loader):
        assert _loader_threads() > 0
        if i == 3:
            break
    _wait_for_no_threads()
    it = iter(loader)
    next(it)
    loader.close()
    _wait_for_no_threads()
    with pytest.raises(StopIteration):
        next(it)
    with dk.Loader(data, 50, num_epochs=1, prefetch=2, **_one_host()) as short:
        assert len(list(short)) == 2
    _wait_for_no_threads()


def test_prefetch_reads_ahead_but_state_counts_handed_out_batches(counting: Any) -> None:
    data = counting(40)
    loader = dk.Loader(data, 4, num_epochs=1, prefetch=3, **_one_host())
    it = iter(loader)
    next(it)
    deadline = time.monotonic() + 5
    while data.rows_read < 16 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert data.rows_read == 16, "one handed out, three prefetched"
    assert loader.state()["step"] == 1
    loader.close()


def test_errors_in_reader_threads_reach_the_caller(counting: Any) -> None:
    class Broken(type(counting(1))):  # type: ignore[misc]
        def read_batch(self, indices: np.ndarray) -> dict[str, Any]:
            if 7 in indices:
                raise OSError("disk on fire")
            return super().read_batch(indices)

    loader = dk.Loader(Broken(20), 2, shuffle=False, num_epochs=1, prefetch=2, **_one_host())
    with pytest.raises(OSError, match="disk on fire"):
        list(loader)
    _wait_for_no_threads()


def test_starting_a_new_iteration_closes_the_previous(counting: Any) -> None:
    loader = dk.Loader(counting(30), 3, num_epochs=1, prefetch=2, **_one_host())
    first = iter(loader)
    next(first)
    second = iter(loader)
    assert len(list(second)) == 9, "continues from the state: one batch was handed out"
    with pytest.raises(StopIteration):
        next(first)


# --- devices, iterable-only datasets, settings ----------------------------------------------------


def test_device_put(counting: Any) -> None:
    on_device = next(iter(dk.Loader(counting(8), 4, device_put=True, **_one_host())))
    assert isinstance(on_device["values"], jax.Array)
    assert isinstance(on_device["names"], list)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    placed = next(iter(dk.Loader(counting(8), 4, device_put=sharding, **_one_host())))
    assert placed["indices"].sharding == sharding
    host = next(iter(dk.Loader(counting(8), 4, **_one_host())))
    assert isinstance(host["values"], np.ndarray)


def test_iterable_only_datasets_load_in_order_and_resume(iter_only: Any) -> None:
    data = iter_only(10)
    loader = dk.Loader(data, 4, shuffle=False, drop_last=False, num_epochs=2, **_one_host())
    batches = _indices(loader)
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] * 2
    resumed = dk.Loader(data, 4, shuffle=False, drop_last=False, num_epochs=2, **_one_host())
    resumed.restore({**loader.state(), "epoch": 1, "step": 1})
    assert _indices(resumed) == [[4, 5, 6, 7], [8, 9]]
    with pytest.raises(dk.RandomAccessError, match="shuffle"):
        dk.Loader(data, 4, shuffle=True, **_one_host())
    with pytest.raises(dk.RandomAccessError):
        dk.Loader(data, 4, shuffle=False, shard_index=0, shard_count=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"prefetch": -1}, "prefetch"),
        ({"num_threads": 0}, "num_threads"),
        ({"num_epochs": -1}, "num_epochs"),
        ({"shuffle": "yes"}, "shuffle"),
        ({"device_put": "gpu"}, "device_put"),
    ],
)
def test_bad_settings(counting: Any, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(SpecError, match=match):
        dk.Loader(counting(10), **{"batch_size": 2, **kwargs})


def test_an_endless_loader_of_nothing_refuses_to_spin(counting: Any) -> None:
    with pytest.raises(SpecError, match="forever"):
        iter(dk.Loader(counting(3), 4, drop_last=True, **_one_host()))
    assert list(dk.Loader(counting(3), 4, drop_last=True, num_epochs=2, **_one_host())) == []


def test_loader_over_synthetic_data_with_device_put() -> None:
    config = dk.ImageModalityConfig(height=32, width=32)
    data = dk.SyntheticImageDataset(config, 100, "random", rngs=0)
    loader = dk.Loader(data, 32, num_epochs=1, device_put=True, **_one_host())
    batches = list(loader)
    assert len(batches) == 3
    assert batches[0]["images"].shape == (32, 32, 32, 3)
    np.testing.assert_array_equal(
        np.asarray(batches[1]["images"][0]), data[int(batches[1]["indices"][0])]["images"]
    )


def test_threads_stop_when_the_loader_is_garbage_collected(counting: Any) -> None:
    import gc

    data = counting(100)
    loader = dk.Loader(data, 5, num_epochs=None, prefetch=4, num_threads=2, **_one_host())
    it = iter(loader)
    next(it)
    assert _loader_threads() > 0
    del it, loader
    gc.collect()
    _wait_for_no_threads()


# --- elastic resume -------------------------------------------------------------------------


def _run_hosts(data: Any, global_batch: int, hosts: int, state: Any, steps: int | None, **kw: Any):
    """Every host of a job of ``hosts`` restored from ``state``; each takes ``steps`` batches
    (all that remain when None). Returns the indices taken, and host ``hosts - 1``'s state."""
    taken: list[int] = []
    last_state = None
    for h in range(hosts):
        loader = dk.Loader(
            data, global_batch // hosts, shard_index=h, shard_count=hosts, prefetch=0, **kw
        )
        if state is not None:
            loader.restore(json.loads(json.dumps(state)))
        epoch = loader.epoch
        iterator = loader.iter_with_epoch()
        for k, (batch_epoch, batch) in enumerate(iterator):
            if (steps is not None and k >= steps) or batch_epoch != epoch:
                break
            taken.extend(np.asarray(batch["indices"]).tolist())
            last_state = loader.state()
        loader.close()
    return taken, last_state


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 200),
    old_hosts=st.integers(1, 8),
    new_hosts=st.integers(1, 8),
    per_host=st.integers(1, 4),
    steps=st.integers(0, 12),
    epoch=st.integers(0, 2),
    drop_last=st.booleans(),
    block=st.sampled_from([None, 3]),
)
def test_elastic_resume_yields_every_remaining_sample_exactly_once(
    counting: Any,
    n: int,
    old_hosts: int,
    new_hosts: int,
    per_host: int,
    steps: int,
    epoch: int,
    drop_last: bool,
    block: int | None,
) -> None:
    # a global batch both host counts divide
    global_batch = per_host * old_hosts * new_hosts
    shuffle = dk.BlockShuffle(block_size=block) if block else True
    kw = {"seed": 7, "drop_last": drop_last, "shuffle": shuffle, "num_epochs": epoch + 1}
    data = counting(n)
    start = None
    if epoch:
        start = {
            **dk.Loader(
                data, global_batch // old_hosts, shard_index=0, shard_count=old_hosts, **kw
            ).state(),
            "epoch": epoch,
        }
    before, state = _run_hosts(data, global_batch, old_hosts, start, steps, **kw)
    if state is None or state["epoch"] != epoch:  # nothing consumed, or the epoch is over
        return
    after, _ = _run_hosts(data, global_batch, new_hosts, state, None, **kw)
    consumed = before + after
    assert len(consumed) == len(set(consumed))  # nothing twice
    expected = n - (n % global_batch if drop_last else 0)
    assert len(consumed) == expected  # nothing lost but the final partial global batch
    order = dk.epoch_order(n, seed=7, epoch=epoch, shuffle=shuffle)
    assert sorted(consumed) == sorted(order[:expected].tolist())


@pytest.mark.parametrize(("old_hosts", "new_hosts"), [(4, 2), (2, 8)])
def test_elastic_resume_4_to_2_and_2_to_8_hosts(counting: Any, old_hosts: int, new_hosts: int):
    data = counting(100)
    kw = {"seed": 3, "num_epochs": 1, "drop_last": True}
    before, state = _run_hosts(data, 16, old_hosts, None, 3, **kw)
    after, _ = _run_hosts(data, 16, new_hosts, state, None, **kw)
    assert len(before) == 48
    assert sorted(before + after) == sorted(dk.epoch_order(100, seed=3, epoch=0)[:96].tolist())
    assert len(set(before + after)) == 96
