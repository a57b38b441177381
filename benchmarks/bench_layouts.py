"""Candidate Zarr layouts for image fields: bytes on disk and random-batch read speed.

    python benchmarks/bench_read.py --samples 10000 --work /tmp/rb10k   # makes the source cache
    python benchmarks/bench_layouts.py --cache /tmp/rb10k/cache --runs 3

Copies the ``images`` rows of a baked cache (64x64x3 uint8 from the benchmark corpus) into
each candidate layout and measures, in the same run, random batches of ``--batch`` samples
(medians over ``--runs``): zarr-python for every layout, and a direct reader (shard index +
memory map, as datakiln reads) where the layout allows one. For the zstd layout the direct
reader also decompresses each inner chunk with numcodecs, which is the cost a compressed
layout would add to datakiln's read path.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import harness
import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

import datakiln
from datakiln.cache.layout import store_fs
from datakiln.cache.shard_reader import ShardedFieldReader


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _direct_zstd(array_path: Path, rows: np.ndarray, shard_rows: int, shape: tuple) -> np.ndarray:
    """Direct read of 1-sample zstd inner chunks: index, ranged bytes, per-chunk decode."""
    out = np.empty((len(rows), *shape), np.uint8)
    codec = numcodecs.Zstd()
    for k, row in enumerate(rows.tolist()):
        shard, inner = divmod(row, shard_rows)
        path = array_path / "c" / str(shard) / "0" / "0" / "0"
        with open(path, "rb") as f:
            f.seek(-(16 * shard_rows + 4), 2)
            index = np.frombuffer(f.read(16 * shard_rows), "<u8").reshape(-1, 2)
            offset, nbytes = index[inner]
            f.seek(int(offset))
            out[k] = np.frombuffer(codec.decode(f.read(int(nbytes))), np.uint8).reshape(shape)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="/tmp/rb10k/cache")
    parser.add_argument("--work", default="/tmp/datakiln-layouts")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    dataset = datakiln.open_cache(args.cache)
    path = dataset.manifest["fields"]["images"]["path"]
    source = zarr.open_array(args.cache, path=path, mode="r")
    n = len(dataset)
    data = source[:n]
    shape = data.shape[1:]
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    candidates = {
        "sharded_1x_raw (datakiln)": {
            "chunks": (1, *shape),
            "shards": (1024, *shape),
            "compressors": None,
        },
        "sharded_1x_zstd1": {
            "chunks": (1, *shape),
            "shards": (1024, *shape),
            "compressors": ZstdCodec(level=1),
        },
        "sharded_1x_blosc_lz4": {
            "chunks": (1, *shape),
            "shards": (1024, *shape),
            "compressors": BloscCodec(cname="lz4", clevel=5),
        },
        "chunks_256_zstd1": {
            "chunks": (256, *shape),
            "shards": None,
            "compressors": ZstdCodec(level=1),
        },
        "chunks_16_raw": {"chunks": (16, *shape), "shards": None, "compressors": None},
    }
    rng = np.random.default_rng(0)
    record = harness.Recorder("bench_layouts", args)
    record.facts.update(samples=n, sample_shape=list(shape), batch=args.batch, layouts={})
    for name, layout in candidates.items():
        key = name.split()[0]
        store = work / key
        array = zarr.open_group(store, mode="w").create_array(
            "images", shape=data.shape, dtype="uint8", fill_value=0, **layout
        )
        array[:] = data
        record.facts["layouts"][key] = {
            "label": name,
            "bytes_on_disk": _size(store),
            "raw_bytes": data.nbytes,
            "disk_vs_raw": _size(store) / data.nbytes,
        }
        direct = None
        if layout["shards"] is not None and layout["compressors"] is None:
            fs, root = store_fs(str(store))
            reader = ShardedFieldReader(fs, root, "images")
            out = np.empty((args.batch, *shape), np.uint8)

            def direct(batches, reader=reader, out=out):
                for idx in batches:
                    reader.read_into(idx, out)
                return len(batches) * args.batch

        elif layout["shards"] is not None and name.startswith("sharded_1x_zstd"):

            def direct(batches, store=store):
                for idx in batches[:10]:
                    _direct_zstd(store / "images", idx, 1024, shape)
                return 10 * args.batch

        def zarr_python(batches, array=array):
            for idx in batches[:5]:
                array.get_orthogonal_selection((np.unique(idx),))
            return 5 * args.batch

        for _ in range(args.runs):
            batches = [rng.integers(0, n, args.batch) for _ in range(args.batches)]
            for method, read in (("zarr_python", zarr_python), ("direct", direct)):
                if read is not None:
                    elapsed, count = harness.timed(lambda read=read, b=batches: read(b))
                    record.add(f"{key}.{method}", count / elapsed, "samples/s")
    record.write()


if __name__ == "__main__":
    main()
