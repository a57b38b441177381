"""The device path: Loader(transform=...) keyed by (seed, epoch, step); device_put shardings."""

from __future__ import annotations

import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datakiln.datasets as dk
from datakiln.errors import SpecError


def _noisy(batch: dict[str, Any], key: jax.Array) -> dict[str, Any]:
    values = jnp.asarray(batch["values"])
    return {"values": values + jax.random.uniform(key, values.shape)}


def _run(loader: dk.Loader, count: int | None = None) -> list[np.ndarray]:
    out = []
    for batch in loader:
        out.append(np.asarray(batch["values"]))
        if count is not None and len(out) == count:
            break
    return out


@pytest.mark.parametrize("prefetch", [0, 2])
def test_transform_is_reproduced_exactly_after_restore(counting: Any, prefetch: int):
    data = counting(40)
    kw = {"seed": 3, "num_epochs": 2, "shard_index": 0, "shard_count": 1, "transform": _noisy}
    full = _run(dk.Loader(data, 8, prefetch=prefetch, **kw))
    assert len(full) == 10
    plain = _run(dk.Loader(data, 8, prefetch=0, **{**kw, "transform": None}))
    noise = [a - b for a, b in zip(full, plain, strict=True)]
    assert all(((n >= 0) & (n < 1)).all() for n in noise)
    assert not np.allclose(noise[0], noise[1])  # another key each step
    assert not np.allclose(noise[0], noise[5])  # and each epoch
    first = dk.Loader(data, 8, prefetch=prefetch, **kw)
    head = _run(first, 3)
    state = json.loads(json.dumps(first.state()))
    first.close()
    resumed = dk.Loader(data, 8, prefetch=prefetch, **kw)
    resumed.restore(state)
    for a, b in zip(head + _run(resumed), full, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_guides_augmentation_is_a_transform():
    data = dk.SyntheticImageDataset(dataset_size=16, rngs=0)
    kw = {"seed": 0, "num_epochs": 1, "shard_index": 0, "shard_count": 1, "prefetch": 0}
    one = [np.asarray(b["images"]) for b in dk.Loader(data, 8, transform=dk.augment_batch, **kw)]
    two = [np.asarray(b["images"]) for b in dk.Loader(data, 8, transform=dk.augment_batch, **kw)]
    raw = [np.asarray(b["images"]) for b in dk.Loader(data, 8, **kw)]
    np.testing.assert_array_equal(one[0], two[0])
    assert not np.allclose(one[0], raw[0])


def test_device_put_with_a_sharding_builds_global_arrays(counting: Any):
    devices = np.array(jax.devices())
    mesh = jax.sharding.Mesh(devices, ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    batch_size = 4 * len(devices)
    loader = dk.Loader(
        counting(64),
        batch_size,
        seed=1,
        num_epochs=1,
        shard_index=0,
        shard_count=1,
        device_put=sharding,
        transform=_noisy,
    )
    plain = dk.Loader(counting(64), batch_size, seed=1, num_epochs=1, shard_index=0, shard_count=1)
    for batch, reference in zip(loader, plain, strict=True):
        assert isinstance(batch["values"], jax.Array)
        assert batch["indices"].sharding == sharding
        assert batch["values"].shape == (batch_size, 2)
        np.testing.assert_array_equal(np.asarray(batch["indices"]), reference["indices"])
        assert isinstance(batch["names"], list)  # strings stay on the host


def test_transform_must_be_callable(counting: Any):
    with pytest.raises(SpecError, match="transform"):
        dk.Loader(counting(8), 4, transform="flip", shard_index=0, shard_count=1)
