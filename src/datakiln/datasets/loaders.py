"""The seed guide's loaders, over :class:`~datakiln.datasets.loader.Loader`'s ordering.

The seed's loaders computed a shuffled permutation and then ignored it, calling
``dataset.get_batch`` (random draws with replacement): an epoch neither covered every sample
nor was reproducible. These read the permutation's batches by index, so every epoch visits
every sample exactly once (with ``drop_last`` the trailing partial batch is left out), in an
order fixed by ``(seed, epoch)`` (:func:`~datakiln.datasets.loader.epoch_order`). They run on
one host (``shard_count=1``); use :class:`~datakiln.datasets.loader.Loader` for several.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from datakiln.datasets.augment import augment_batch
from datakiln.datasets.base import BaseDataset, has_random_access, read_indices
from datakiln.datasets.loader import Loader
from datakiln.errors import SpecError


def _single_host(
    dataset: Any,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    num_epochs: int,
    drop_last: bool,
    prefetch: int = 0,
    num_threads: int | None = None,
    epoch: int = 0,
) -> Loader:
    loader = Loader(
        dataset,
        batch_size,
        shuffle=shuffle,
        seed=seed,
        num_epochs=num_epochs,
        drop_last=drop_last,
        prefetch=prefetch,
        num_threads=num_threads,
        shard_index=0,
        shard_count=1,
    )
    loader.set_epoch(epoch)
    return loader


def create_simple_data_loader(
    dataset: Any,
    batch_size: int,
    shuffle: bool = True,
    drop_last: bool = False,
    *,
    seed: int = 0,
    epoch: int = 0,
) -> Iterator[dict[str, Any]]:
    """Batches of one epoch.

    Args:
        dataset: Any dataset; one that can only be iterated needs ``shuffle=False``.
        batch_size: Samples per batch.
        shuffle: Visit samples in the permutation of ``(seed, epoch)`` instead of index order.
        drop_last: Leave out the trailing partial batch (else it is yielded, smaller).
        seed: Seed of the order.
        epoch: Which epoch's order to use.

    Returns:
        An iterator of batch dicts. Settings are checked when this is called.
    """
    loader = _single_host(
        dataset,
        batch_size,
        shuffle=shuffle,
        seed=seed,
        num_epochs=epoch + 1,
        drop_last=drop_last,
        epoch=epoch,
    )
    return iter(loader)


def create_multi_epoch_data_loader(
    dataset: Any,
    batch_size: int,
    num_epochs: int,
    shuffle: bool = True,
    drop_last: bool = False,
    *,
    seed: int = 0,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(epoch, batch)`` pairs of ``num_epochs`` epochs, each in its own order.

    Same arguments as :func:`create_simple_data_loader`; epoch ``e`` uses the order of
    ``(seed, e)``, so epochs differ from each other and repeat across runs.
    """
    loader = _single_host(
        dataset,
        batch_size,
        shuffle=shuffle,
        seed=seed,
        num_epochs=num_epochs,
        drop_last=drop_last,
    )
    return loader.iter_with_epoch()


class PrefetchDataLoader:
    """One epoch per ``iter()``, read ahead by worker threads.

    Each iteration is the next epoch (0, 1, ...; or set it with :meth:`set_epoch`), in the
    order of ``(seed, epoch)``. ``prefetch_size`` batches are read ahead by ``num_workers``
    threads and handed out in order (the seed shared one RNG across threads and waited on the
    wrong futures). The threads stop when the iteration ends or is abandoned.

    Args:
        dataset: Any dataset that can be read by index.
        batch_size: Samples per batch.
        shuffle: Shuffle each epoch.
        num_workers: Reader threads.
        prefetch_size: Batches read ahead.
        drop_last: Leave out the trailing partial batch.
        seed: Seed of the order.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        shuffle: bool = True,
        num_workers: int = 2,
        prefetch_size: int = 2,
        *,
        drop_last: bool = False,
        seed: int = 0,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.num_workers = num_workers
        self.prefetch_size = prefetch_size
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0
        self._batches = len(self._loader(0))  # checks the settings now

    def _loader(self, epoch: int) -> Loader:
        return _single_host(
            self.dataset,
            self.batch_size,
            shuffle=self.shuffle,
            seed=self.seed,
            num_epochs=epoch + 1,
            drop_last=self.drop_last,
            prefetch=self.prefetch_size,
            num_threads=self.num_workers,
            epoch=epoch,
        )

    def __len__(self) -> int:
        """Batches per epoch."""
        return self._batches

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch``."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        loader = self._loader(self.epoch)
        self.epoch += 1
        return iter(loader)


def create_training_pipeline(
    dataset: Any,
    batch_size: int,
    augment: bool = True,
    normalize: bool = True,
    shuffle: bool = True,
    *,
    seed: int = 0,
    epoch: int = 0,
) -> Iterator[dict[str, Any]]:
    """One epoch of full image batches, min-max normalised per image and augmented.

    The seed normalised by the min and max of the whole batch, so an image's values depended
    on its batch-mates; here each image is scaled to ``[0, 1]`` on its own. Augmentation
    (:func:`~datakiln.datasets.augment_batch`) uses the key ``fold_in(fold_in(key(seed),
    epoch), step)``, so it is reproducible and differs per batch and epoch.
    """
    loader = _single_host(
        dataset,
        batch_size,
        shuffle=shuffle,
        seed=seed,
        num_epochs=epoch + 1,
        drop_last=True,
        epoch=epoch,
    )
    base_key = jax.random.fold_in(jax.random.key(seed), epoch)

    def batches() -> Iterator[dict[str, Any]]:
        for step, batch in enumerate(loader):
            if normalize:
                batch = {**batch, "images": _minmax(jnp.asarray(batch["images"]))}
            if augment:
                batch = augment_batch(batch, jax.random.fold_in(base_key, step))
            yield batch

    return batches()


@jax.jit
def _minmax(images: jax.Array) -> jax.Array:
    axes = tuple(range(1, images.ndim))
    low = images.min(axis=axes, keepdims=True)
    high = images.max(axis=axes, keepdims=True)
    return (images - low) / (high - low + 1e-8)


class _Zipped(BaseDataset):
    """Two datasets of one length read at the same indices, merged into one batch."""

    def __init__(self, first: Any, second: Any, keys: tuple[str, str]) -> None:
        super().__init__(None, getattr(first, "split", "train"))
        self.first, self.second, self.keys = first, second, keys

    def __len__(self) -> int:
        return len(self.first)

    @property
    def supports_random_access(self) -> bool:
        return has_random_access(self.first) and has_random_access(self.second)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.supports_random_access:
            yield from super().__iter__()
            return
        for n, (a, b) in enumerate(zip(self.first, self.second, strict=True)):
            yield {self.keys[0]: a[self.keys[0]], self.keys[1]: b[self.keys[1]], "index": n}

    def read_batch(self, indices: np.ndarray) -> dict[str, Any]:
        a = read_indices(self.first, indices, purpose="load multi-modal batches")
        b = read_indices(self.second, indices, purpose="load multi-modal batches")
        return {self.keys[0]: a[self.keys[0]], self.keys[1]: b[self.keys[1]], "indices": indices}


def create_multi_modal_loader(
    image_dataset: Any,
    text_dataset: Any,
    batch_size: int,
    align: bool = True,
    *,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = True,
) -> Iterator[dict[str, Any]]:
    """One epoch of ``{"images", "text_tokens"}`` batches from two datasets.

    With ``align`` both are read at the same indices, so row ``k`` of the images and of the
    tokens belong to the same sample (the seed drew them independently even when asked to
    align). Without it, the text follows an independent order (seed ``seed + 1``). Either way
    each dataset's samples are all visited once.

    Raises:
        SpecError: The datasets differ in length.
    """
    if len(image_dataset) != len(text_dataset):
        raise SpecError(
            f"datasets must have the same length to be loaded together: {len(image_dataset)} "
            f"images vs {len(text_dataset)} texts"
        )
    if align:
        zipped = _Zipped(image_dataset, text_dataset, ("images", "text_tokens"))
        loader = _single_host(
            zipped, batch_size, shuffle=shuffle, seed=seed, num_epochs=1, drop_last=drop_last
        )
        return iter(loader)
    images = _single_host(
        image_dataset, batch_size, shuffle=shuffle, seed=seed, num_epochs=1, drop_last=drop_last
    )
    texts = _single_host(
        text_dataset, batch_size, shuffle=shuffle, seed=seed + 1, num_epochs=1, drop_last=drop_last
    )
    return (
        {"images": a["images"], "text_tokens": b["text_tokens"]}
        for a, b in zip(images, texts, strict=True)
    )
