"""datakiln head to head with its peers: bake the same JPEGs, then read them back, in one run.

    python ../shared/bench/make_corpus.py --out /tmp/corpus
    /work/peersenv/bin/python benchmarks/bench_peers.py --corpus /tmp/corpus --runs 3

The peers are benchmark-only dependencies (``pip install -e '.[peers]'``, best in a virtual
environment of their own): Hugging Face ``datasets``, WebDataset, Grain over ArrayRecord,
LitData and MosaicML Streaming. A peer whose import fails is skipped, and the results say why.

Every contender gets the same preprocessing: decode with Pillow, ``draft`` to the smallest
JPEG scale that still covers the target, convert to RGB, resize to ``--size`` square with
Pillow BILINEAR, keep uint8. (datakiln's bake does exactly this, with its own resize kernel
that matches Pillow BILINEAR on every pixel.) Then per run, the contenders taking turns:

- **bake**: the corpus's JPEGs into each library's format, in a fresh folder, using both
  cores the way each library offers: datakiln's ``bake`` (its scheduler), ``datasets``'
  ``map(num_proc=2)`` then ``save_to_disk``, LitData's ``optimize(num_workers=2)``; for the
  writers that take samples one by one (WebDataset ``ShardWriter``, ``ArrayRecordWriter``,
  Streaming's ``MDSWriter``) a two-process pool preprocesses and the writer runs here.
  Shards hold ``--shard-size`` samples where the format has a sample count.
- **random**: ``--batches`` batches of ``--batch`` random indices (the same for everyone),
  uint8 samples gathered into one array: datakiln ``get_batch(indices=...)`` on a
  ``dtype="raw"`` cache, ``datasets`` ``ds[indices]``, Grain's ``ArrayRecordDataSource``
  ``__getitems__``, LitData's and Streaming's ``dataset[i]``. WebDataset streams and has no
  random access: no figure.
- **epoch**: one shuffled pass over all samples in batches of ``--batch``, with each
  library's own shuffling: datakiln ``Loader`` (full shuffle, ``prefetch=2``), ``datasets``
  ``shuffle().iter()`` (full shuffle), Grain ``MapDataset.shuffle().batch()`` through
  ``to_iter_dataset()`` (full shuffle, its read threads), WebDataset (shard order shuffled,
  then a 1,000-sample buffer), LitData and Streaming (their chunk-then-sample shuffles),
  the last three collated into arrays here.

Figures are samples/s (images/s for bakes); ratios are relative to datakiln in the same run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import sys
from collections.abc import Callable, Iterator
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any, Protocol

import harness
import numpy as np
from PIL import Image

import datakiln


def preprocess(path: str, size: int) -> np.ndarray:
    """The one preprocessing every contender gets: draft decode, RGB, BILINEAR resize, uint8."""
    with Image.open(path) as image:
        image.draft("RGB", (size, size))
        return np.asarray(
            image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), np.uint8
        )


def _preprocess_pair(job: tuple[str, int]) -> np.ndarray:
    return preprocess(*job)


def _pool_images(pool: Pool, paths: list[str], size: int) -> Iterator[np.ndarray]:
    """Preprocessed images in order, decoded by the pool's processes."""
    yield from pool.imap(_preprocess_pair, [(p, size) for p in paths], chunksize=32)


def _batches(
    samples: Iterator[np.ndarray], batch: int, pick: Callable[[Any], np.ndarray]
) -> Iterator[np.ndarray]:
    """Samples stacked into batches of ``batch`` (the last, partial, one too)."""
    pending: list[np.ndarray] = []
    for sample in samples:
        pending.append(np.asarray(pick(sample)))
        if len(pending) == batch:
            yield np.stack(pending)
            pending = []
    if pending:
        yield np.stack(pending)


class Contender(Protocol):
    """One library's way to bake the corpus and to read it back."""

    name: str

    def bake(self, out: Path) -> None: ...

    def open(self, out: Path) -> None: ...

    def random(self, indices: np.ndarray) -> np.ndarray | None: ...

    def epoch(self, seed: int) -> int: ...


class Datakiln:
    name = "datakiln"

    def __init__(self, args: argparse.Namespace, paths: list[str], jax_cache: str) -> None:
        self.args, self.paths, self.jax_cache = args, paths, jax_cache

    def bake(self, out: Path) -> None:
        spec = datakiln.BakeSpec(
            sources=(str(Path(self.paths[0]).parent),),
            output=str(out),
            shard_size=self.args.shard_size,
            image=datakiln.ImageParams(height=self.args.size, width=self.args.size),
        )
        report = datakiln.bake(spec, jax_cache_dir=self.jax_cache)
        assert report.baked == len(self.paths), report.rejected_by_reason

    def open(self, out: Path) -> None:
        self.dataset = datakiln.open_cache(str(out), dtype="raw")

    def random(self, indices: np.ndarray) -> np.ndarray:
        return self.dataset.get_batch(indices=indices)["images"]

    def epoch(self, seed: int) -> int:
        loader = datakiln.Loader(
            self.dataset,
            self.args.batch,
            shuffle=True,
            seed=seed,
            num_epochs=1,
            prefetch=2,
            drop_last=False,  # every sample, as the peers read
        )
        return sum(len(b["images"]) for b in loader)


def _hf_map(row: dict[str, Any], size: int) -> dict[str, Any]:
    return {"image": preprocess(row["path"], size)}


class HFDatasets:
    name = "hf_datasets"

    def __init__(self, args: argparse.Namespace, paths: list[str], pool: Pool) -> None:
        import datasets

        datasets.disable_progress_bars()
        self.datasets, self.args, self.paths = datasets, args, paths

    def bake(self, out: Path) -> None:
        ds = self.datasets
        size = self.args.size
        features = ds.Features({"image": ds.Array3D((size, size, 3), "uint8")})
        table = ds.Dataset.from_dict({"path": self.paths})
        baked = table.map(
            _hf_map,
            fn_kwargs={"size": size},
            remove_columns=["path"],
            features=features,
            num_proc=2,
            cache_file_name=str(out.parent / f"{out.name}-map.arrow"),
        )
        baked.save_to_disk(str(out))

    def open(self, out: Path) -> None:
        self.dataset = self.datasets.load_from_disk(str(out)).with_format("numpy")

    def random(self, indices: np.ndarray) -> np.ndarray:
        # rows are fetched in ascending order (kinder to Arrow), then put in the order asked
        order = np.argsort(indices, kind="stable")
        rows = self.dataset[indices[order]]["image"]
        out = np.empty_like(rows)
        out[order] = rows
        return out

    def epoch(self, seed: int) -> int:
        shuffled = self.dataset.shuffle(seed=seed)
        return sum(len(b["image"]) for b in shuffled.iter(batch_size=self.args.batch))


class WebDataset:
    name = "webdataset"

    def __init__(self, args: argparse.Namespace, paths: list[str], pool: Pool) -> None:
        import webdataset

        self.wds, self.args, self.paths, self.pool = webdataset, args, paths, pool

    def bake(self, out: Path) -> None:
        out.mkdir(parents=True)
        pattern = str(out / "shard-%05d.tar")
        with self.wds.ShardWriter(pattern, maxcount=self.args.shard_size, verbose=0) as sink:
            for k, image in enumerate(_pool_images(self.pool, self.paths, self.args.size)):
                sink.write({"__key__": f"{k:06d}", "npy": image})

    def open(self, out: Path) -> None:
        self.shards = sorted(str(p) for p in out.glob("*.tar"))

    def random(self, indices: np.ndarray) -> None:
        return None  # a stream: no random access

    def epoch(self, seed: int) -> int:
        pipeline = (
            self.wds.WebDataset(self.shards, shardshuffle=len(self.shards), seed=seed)
            .shuffle(1000)
            .decode()
            .to_tuple("npy")
            .batched(self.args.batch)
        )
        return sum(len(images) for (images,) in pipeline)


class GrainArrayRecord:
    name = "grain_arrayrecord"

    def __init__(self, args: argparse.Namespace, paths: list[str], pool: Pool) -> None:
        import grain
        from array_record.python.array_record_module import ArrayRecordWriter

        self.grain, self.writer, self.args, self.paths = grain, ArrayRecordWriter, args, paths
        self.pool = pool
        self.shape = (args.size, args.size, 3)

    def bake(self, out: Path) -> None:
        out.mkdir(parents=True)
        writer = None
        for k, image in enumerate(_pool_images(self.pool, self.paths, self.args.size)):
            if k % self.args.shard_size == 0:
                if writer is not None:
                    writer.close()
                name = out / f"shard-{k // self.args.shard_size:05d}.array_record"
                writer = self.writer(str(name), "group_size:1")
            writer.write(image.tobytes())
        if writer is not None:
            writer.close()

    def open(self, out: Path) -> None:
        files = sorted(str(p) for p in out.glob("*.array_record"))
        self.source = self.grain.sources.ArrayRecordDataSource(files)

    def _decode(self, record: bytes) -> np.ndarray:
        return np.frombuffer(record, np.uint8).reshape(self.shape)

    def random(self, indices: np.ndarray) -> np.ndarray:
        records = self.source.__getitems__(indices.tolist())
        return np.stack([self._decode(r) for r in records])

    def epoch(self, seed: int) -> int:
        dataset = (
            self.grain.MapDataset.source(self.source)
            .shuffle(seed=seed)
            .map(self._decode)
            .batch(self.args.batch)
        )
        return sum(len(b) for b in dataset.to_iter_dataset())


def _litdata_sample(path: str, size: int = 64) -> dict[str, np.ndarray]:
    return {"image": preprocess(path, size)}


class LitData:
    name = "litdata"

    def __init__(self, args: argparse.Namespace, paths: list[str], pool: Pool) -> None:
        import litdata

        self.litdata, self.args, self.paths = litdata, args, paths

    def bake(self, out: Path) -> None:
        import functools

        self.litdata.optimize(
            fn=functools.partial(_litdata_sample, size=self.args.size),
            inputs=self.paths,
            output_dir=str(out),
            chunk_size=self.args.shard_size,
            num_workers=2,
            mode="overwrite",
        )

    def open(self, out: Path) -> None:
        self.out = out
        self.dataset = self.litdata.StreamingDataset(str(out))

    def random(self, indices: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(self.dataset[int(i)]["image"]) for i in indices])

    def epoch(self, seed: int) -> int:
        dataset = self.litdata.StreamingDataset(str(self.out), shuffle=True, seed=seed)
        batches = _batches(iter(dataset), self.args.batch, lambda s: s["image"])
        return sum(len(b) for b in batches)


class MosaicStreaming:
    name = "mosaic_streaming"

    def __init__(self, args: argparse.Namespace, paths: list[str], pool: Pool) -> None:
        import streaming

        self.streaming, self.args, self.paths, self.pool = streaming, args, paths, pool

    def bake(self, out: Path) -> None:
        size = self.args.size
        columns = {"image": f"ndarray:uint8:{size},{size},3"}
        # MDS shards are sized in bytes: --shard-size samples of raw pixels each
        limit = self.args.shard_size * size * size * 3 + 4096
        with self.streaming.MDSWriter(out=str(out), columns=columns, size_limit=limit) as sink:
            for image in _pool_images(self.pool, self.paths, size):
                sink.write({"image": image})

    def open(self, out: Path) -> None:
        self.streaming.base.util.clean_stale_shared_memory()
        self.out = out
        self.dataset = self.streaming.StreamingDataset(local=str(out), batch_size=self.args.batch)

    def random(self, indices: np.ndarray) -> np.ndarray:
        return np.stack([self.dataset[int(i)]["image"] for i in indices])

    def epoch(self, seed: int) -> int:
        self.streaming.base.util.clean_stale_shared_memory()
        dataset = self.streaming.StreamingDataset(
            local=str(self.out), shuffle=True, shuffle_seed=seed, batch_size=self.args.batch
        )
        return sum(len(b) for b in _batches(iter(dataset), self.args.batch, lambda s: s["image"]))


# The peers' distributions, whose versions go into the results.
PEER_PACKAGES = (
    "datasets",
    "webdataset",
    "grain",
    "array-record",
    "litdata",
    "mosaicml-streaming",
)
PEERS: dict[str, Callable[[argparse.Namespace, list[str], Pool], Contender]] = {
    "hf_datasets": HFDatasets,
    "webdataset": WebDataset,
    "grain_arrayrecord": GrainArrayRecord,
    "litdata": LitData,
    "mosaic_streaming": MosaicStreaming,
}


def _contenders(
    args: argparse.Namespace,
    paths: list[str],
    jax_cache: str,
    pool: Pool,
    skipped: dict[str, str],
) -> list[Contender]:
    contenders: list[Contender] = [Datakiln(args, paths, jax_cache)]
    for name in [n for n in args.peers.split(",") if n]:
        try:
            contenders.append(PEERS[name](args, paths, pool))
        except (ImportError, RuntimeError) as err:  # missing, or a broken binary dependency
            skipped[name] = f"{type(err).__name__}: {err}"
            print(f"skipping {name}: {skipped[name]}", file=sys.stderr)
    return contenders


def _check_pixels(contenders: list[Contender], paths: list[str], size: int) -> dict[str, Any]:
    """How each contender's stored images compare with :func:`preprocess` of every file.

    The peers store exactly what ``preprocess`` returns, though not always in the files'
    order (LitData's workers interleave), so for them the check is that the same images come
    back, as a multiset. datakiln keeps the files' order and resizes with its own kernel,
    which maps a drafted JPEG back onto the original image's geometry where the DCT scale does
    not divide its size: its largest and mean differences from Pillow's resize are reported.
    """
    reference = [preprocess(p, size) for p in paths]
    expected = sorted(image.tobytes() for image in reference)
    every = np.arange(len(paths))
    report: dict[str, Any] = {}
    for contender in contenders:
        got = [contender.random(every[k : k + 256]) for k in range(0, len(paths), 256)]
        if got[0] is None:
            continue
        images = np.concatenate(got).astype(np.uint8, copy=False)
        if contender.name == "datakiln":
            diff = np.abs(images.astype(np.int16) - np.stack(reference).astype(np.int16))
            report[contender.name] = {
                "max_level_difference": int(diff.max()),
                "mean_level_difference": round(float(diff.mean()), 3),
            }
        else:
            report[contender.name] = {
                "same_images": sorted(image.tobytes() for image in images) == expected,
                "same_order": all(
                    np.array_equal(a, b) for a, b in zip(images, reference, strict=True)
                ),
            }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="/tmp/corpus")
    parser.add_argument("--subdir", default="images/jpeg")
    parser.add_argument("--work", default="/tmp/datakiln-peers")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=20, help="random batches per run")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated, of: %(default)s")
    args = parser.parse_args()
    record = harness.Recorder("bench_peers", args)
    paths = sorted(str(p) for p in (Path(args.corpus) / args.subdir).iterdir() if p.is_file())
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    skipped: dict[str, str] = {}
    # one pool of two spawned processes, started once, preprocesses for the sample writers
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        contenders = _contenders(args, paths, str(work / "jax-cache"), pool, skipped)
        _measure(args, record, paths, work, contenders, skipped)
    record.write()


def _measure(
    args: argparse.Namespace,
    record: harness.Recorder,
    paths: list[str],
    work: Path,
    contenders: list[Contender],
    skipped: dict[str, str],
) -> None:
    outs = {c.name: work / c.name for c in contenders}
    # warm-up: one untimed bake each (JAX compilation cache, imports, worker start-up)
    for c in contenders:
        c.bake(outs[c.name])
        c.open(outs[c.name])
    record.facts.update(
        images=len(paths),
        size=args.size,
        skipped=skipped,
        versions=harness.package_versions(PEER_PACKAGES),
        pixels_against_pillow=_check_pixels(contenders, paths, args.size),
        bytes_on_disk={
            c.name: sum(p.stat().st_size for p in outs[c.name].rglob("*") if p.is_file())
            for c in contenders
        },
    )

    def bake(c: Contender) -> float:
        shutil.rmtree(outs[c.name], ignore_errors=True)
        for stale in work.glob(f"{c.name}-*"):  # datasets' map output beside the folder
            stale.unlink()
        return harness.per_second(len(paths), lambda: c.bake(outs[c.name]))

    def random(c: Contender, run: int) -> float:
        rng = np.random.default_rng(run)
        picks = [rng.integers(0, len(paths), args.batch) for _ in range(args.batches)]
        return harness.per_second(len(picks) * args.batch, lambda: [c.random(i) for i in picks])

    def epoch(c: Contender, run: int) -> float:
        elapsed, count = harness.timed(lambda: c.epoch(run))
        assert count == len(paths), (c.name, count)
        return count / elapsed

    bakes = harness.alternate({c.name: lambda c=c: bake(c) for c in contenders}, args.runs)
    record.extend(bakes, "images/s", prefix="bake.")
    for c in contenders:
        c.open(outs[c.name])
    can_random = [c for c in contenders if c.random(np.arange(1)) is not None]
    for run in range(args.runs):
        for c in can_random:
            record.add(f"random.{c.name}", random(c, run), "samples/s")
        for c in contenders:
            record.add(f"epoch.{c.name}", epoch(c, run), "samples/s")
    for c in contenders[1:]:
        for kind in ("bake", "random", "epoch"):
            record.ratio(f"{kind}.{c.name}_vs_datakiln", f"{kind}.{c.name}", f"{kind}.datakiln")


if __name__ == "__main__":
    main()
