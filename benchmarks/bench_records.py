"""Records bakes against the same images baked from a folder, in the same run.

    python ../shared/bench/make_corpus.py --out /tmp/corpus --pngs 0 --lines 10
    python benchmarks/bench_records.py --corpus /tmp/corpus --runs 3

The benchmark JPEGs (``images/jpeg``) are written once more as WebDataset tar shards (256
records each: ``KEY.jpg``, ``KEY.txt``), as a Hugging Face style Parquet with the JPEG bytes
embedded, and as a CSV naming the files. Each run bakes, alternating, the folder (images
modality) and the three records forms with one image field, 64x64, shards of 256, through the
CLI (``scheduler auto``); throughput is inputs over the bake's own wall time (report.json).
Reports medians and each form's ratio to the folder bake of the same run.

``--s3`` also bakes the folder and the Parquet from a moto S3 server on loopback (the same
CLI, credentials and endpoint from the environment): a folder there costs a GET per image,
the Parquet one ranged GET per row group.

``--cold`` also bakes the four forms with their files out of the page cache: before each bake
every input file (the JPEGs, tars, Parquet and CSV) is dropped from it with
``posix_fadvise(DONTNEED)``, so each form reads its bytes from the disk, as a training set
larger than memory does (Linux only; the interpreter and its libraries stay cached).

``--speech`` also bakes the corpus WAVs (``audio/``) as an audio bake and as records from a
TSV naming each clip beside a transcript (an audio field alone, and with a text field).

``--rss`` also measures a worker's peak RSS (one synchronous process) baking a tar of the
same records and one of the same records padded to about 2 GiB with members that no field
reads: flat, because tasks read members by byte range and never the whole archive.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import harness

SIZE = 64
SHARD = 256


def write_forms(files: list[Path], root: Path) -> dict[str, list[str]]:
    """The same records as tar shards, a Parquet with bytes, and a CSV of paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tars = root / "shards"
    tars.mkdir(parents=True)
    for first in range(0, len(files), SHARD):
        with tarfile.open(tars / f"{first // SHARD:05d}.tar", "w") as archive:
            for k, path in enumerate(files[first : first + SHARD], start=first):
                for ext, data in (("jpg", path.read_bytes()), ("txt", path.stem.encode())):
                    info = tarfile.TarInfo(f"{k:06d}.{ext}")
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    images = pa.array([{"bytes": p.read_bytes(), "path": p.name} for p in files], struct)
    pq.write_table(pa.table({"image": images}), root / "pairs.parquet", row_group_size=SHARD)
    with (root / "paths.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image"])
        writer.writerows([[str(p)] for p in files])
    return {
        "tar": [str(tars / "*.tar"), "--fields", "images=image:jpg"],
        "parquet": [str(root / "pairs.parquet"), "--fields", "images=image:image"],
        "csv": [str(root / "paths.csv"), "--fields", "images=image:image"],
    }


def bake(
    args: list[str], out: Path, env: dict[str, str], flags: tuple[str, ...] = ("--size", str(SIZE))
) -> float:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "datakiln",
        "bake",
        *args,
        "--out",
        str(out),
        *flags,
        "--shard-size",
        str(SHARD),
        "-q",
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    report = json.loads((out / "report.json").read_text())
    assert report["rejected"] == 0, report["rejected_by_reason"]
    return report["inputs"] / report["wall_s"]


def speech_figures(corpus: Path, runs: int, env: dict[str, str], root: Path) -> dict[str, Any]:
    """Clips/s of the corpus WAVs as an audio bake and as records from a TSV naming each clip
    beside a transcript (an audio field alone, then with a text field), taking turns."""
    clips = sorted((corpus / "audio").glob("*.wav"))
    table = root / "speech.tsv"
    with table.open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["path", "sentence"])
        writer.writerows([[str(p), f"clip number {k} of the corpus"] for k, p in enumerate(clips)])
    forms = {
        "audio_folder": [str(corpus / "audio"), "--modality", "audio"],
        "audio_tsv": [str(table), "--fields", "audio=audio:path"],
        "speech_tsv": [str(table), "--fields", "audio=audio:path,transcripts=text:sentence"],
    }
    figures = harness.alternate(
        {
            name: lambda name=name, form=form: bake(form, root / f"speech-{name}", env, ())
            for name, form in forms.items()
        },
        runs,
        warmup=True,
    )
    return {"clips": len(clips), **figures}


def peak_rss_child(tar_glob: str, out: str) -> list[float]:
    """In a fresh process (``harness.spawn``): bake ``tar_glob`` with the synchronous
    scheduler; returns the rows baked and this process's peak RSS (MiB)."""
    import datakiln

    spec = datakiln.BakeSpec(
        sources=(tar_glob,),
        output=out,
        shard_size=SHARD,
        scheduler="synchronous",
        fields={"images": {"modality": "image", "column": "jpg", "height": SIZE, "width": SIZE}},
    )
    report = datakiln.bake(spec)
    return [report.baked, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]


def peak_rss(tar_glob: str, out: Path, env: dict[str, str]) -> float:
    """Peak RSS (MiB) of one process baking ``tar_glob`` with the synchronous scheduler."""
    shutil.rmtree(out, ignore_errors=True)
    return harness.spawn(peak_rss_child, tar_glob, str(out), env=env)


def padded_tar(files: list[Path], path: Path, target_bytes: int) -> int:
    """One tar of the records, each with an unread ``.pad`` member, about ``target_bytes``."""
    pad = bytes(max(0, target_bytes // len(files) - 40_000))
    with tarfile.open(path, "w") as archive:
        for k, p in enumerate(files):
            for ext, data in (("jpg", p.read_bytes()), ("pad", pad)):
                info = tarfile.TarInfo(f"{k:06d}.{ext}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return path.stat().st_size


def evict(paths: list[Path]) -> None:
    """Drop ``paths`` from the page cache (clean pages only: ``os.sync()`` first)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


S3_BUCKET = "bench-records"


def s3_figures(
    files: list[Path], parquet: Path, runs: int, env: dict[str, str], root: Path
) -> dict[str, list[float]]:
    """inputs/s of the folder and the Parquet baked from a moto S3 server, taking turns."""
    import s3fs

    with harness.moto_server() as endpoint:
        s3_env = {
            **env,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        fs = s3fs.S3FileSystem(key="testing", secret="testing-secret-key", endpoint_url=endpoint)
        fs.mkdir(S3_BUCKET)
        fs.put([str(p) for p in files], [f"{S3_BUCKET}/jpeg/{p.name}" for p in files])
        fs.put_file(str(parquet), f"{S3_BUCKET}/pairs.parquet")
        forms = {
            "folder": [f"s3://{S3_BUCKET}/jpeg"],
            "parquet": [f"s3://{S3_BUCKET}/pairs.parquet", "--fields", "images=image:image"],
        }
        return harness.alternate(
            {
                name: lambda name=name, form=form: bake(form, root / f"s3-{name}", s3_env)
                for name, form in forms.items()
            },
            runs,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="/tmp/corpus")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rss", action="store_true", help="also the archive-size RSS check")
    parser.add_argument("--rss-bytes", type=int, default=2 * 2**30)
    parser.add_argument("--s3", action="store_true", help="also folder and Parquet from S3")
    parser.add_argument("--s3-runs", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="also with inputs out of the cache")
    parser.add_argument(
        "--speech", action="store_true", help="also the corpus WAVs: audio bake against a TSV"
    )
    args = parser.parse_args()
    record = harness.Recorder("bench_records", args)
    files = sorted((Path(args.corpus) / "images" / "jpeg").glob("*.jpg"))
    record.facts["images"] = len(files)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {**os.environ, "DATAKILN_JAX_CACHE": str(root / "jax")}
        forms = {"folder": [str(Path(args.corpus) / "images" / "jpeg")], **write_forms(files, root)}
        bake(forms["folder"], root / "warm", env)  # fills the compilation cache
        figures = harness.alternate(
            {
                name: lambda name=name, form=form: bake(form, root / name, env)
                for name, form in forms.items()
            },
            args.runs,
        )
        record.extend(figures, "inputs/s")
        for name in forms:
            if name != "folder":
                record.ratio(f"{name}_vs_folder", name, "folder")
        if args.cold:
            os.sync()  # written pages are dirty until then, and dirty pages stay cached
            inputs = [*files, *(root / "shards").glob("*.tar"), root / "pairs.parquet"]
            inputs.append(root / "paths.csv")

            def cold(form: list[str], out: Path) -> float:
                evict(inputs)
                return bake(form, out, env)

            record.facts["cold"] = harness.alternate(
                {
                    name: lambda name=name, form=form: cold(form, root / f"cold-{name}")
                    for name, form in forms.items()
                },
                args.runs,
            )
        if args.speech:
            record.facts["speech"] = speech_figures(Path(args.corpus), args.runs, env, root)
        if args.rss:
            small = root / "small"
            small.mkdir()
            padded_tar(files, small / "a.tar", 0)
            big = root / "big"
            big.mkdir()
            size = padded_tar(files, big / "a.tar", args.rss_bytes)
            record.facts["rss_mib"] = {
                "small_tar_bytes": (small / "a.tar").stat().st_size,
                "small_tar": peak_rss(str(small / "a.tar"), root / "rs", env),
                "big_tar_bytes": size,
                "big_tar": peak_rss(str(big / "a.tar"), root / "rb", env),
            }
        # after the RSS children: a spawned child's ru_maxrss starts at this process's RSS
        if args.s3:
            record.facts["s3"] = s3_figures(files, root / "pairs.parquet", args.s3_runs, env, root)
    record.write()


if __name__ == "__main__":
    main()
