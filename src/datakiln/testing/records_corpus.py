"""The same image + caption + label records written in every container a records bake reads.

A CSV naming files, a Hugging Face style Parquet with embedded bytes, WebDataset tar shards
and a zip archive. Tests, benchmarks and the README bake them and compare the rows.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WORDS = ("red", "small", "bright", "quiet", "round", "striped", "old", "blue", "tall", "soft")
CLASSES = ("cat", "dog", "owl")


@dataclass(frozen=True)
class RecordsCorpus:
    """Where each form of the corpus is, and the records themselves in record order.

    A record is (key, file, caption, label).
    """

    root: Path
    csv: Path
    parquet: Path
    tars: tuple[Path, ...]
    zip: Path
    keys: tuple[str, ...]
    images: tuple[Path, ...]
    captions: tuple[str, ...]
    labels: tuple[str, ...]


def write_records_corpus(
    root: Path,
    n: int = 24,
    *,
    seed: int = 0,
    per_tar: int = 10,
    size: tuple[int, int] = (48, 40),
    image_paths: Sequence[Path] | None = None,
) -> RecordsCorpus:
    """Write ``n`` records (or one per file of ``image_paths``) under ``root`` in every form."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    images: list[Path] = []
    if image_paths is None:
        folder = root / "images"
        folder.mkdir(exist_ok=True)
        for i in range(n):
            h, w = size[0] + int(rng.integers(0, 9)), size[1] + int(rng.integers(0, 9))
            path = folder / f"{i:05d}.jpg"
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=90)
            images.append(path)
    else:
        images = [Path(p) for p in image_paths]
    n = len(images)
    keys = tuple(f"{i:05d}" for i in range(n))
    captions = tuple(
        " ".join(WORDS[int(j)] for j in rng.integers(0, len(WORDS), 3 + i % 4)) for i in range(n)
    )
    labels = tuple(CLASSES[int(j)] for j in rng.integers(0, len(CLASSES), n))
    suffixes = [p.suffix.lower().lstrip(".") or "jpg" for p in images]

    csv_path = root / "captions.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "image", "caption", "label"])
        for k, path, caption, label in zip(keys, images, captions, labels, strict=True):
            writer.writerow(
                [
                    k,
                    str(Path(path).resolve().relative_to(root.resolve()))
                    if Path(path).resolve().is_relative_to(root.resolve())
                    else str(path),
                    caption,
                    label,
                ]
            )

    import pyarrow as pa
    import pyarrow.parquet as pq

    structs = [{"bytes": p.read_bytes(), "path": p.name} for p in images]
    table = pa.table(
        {
            "key": list(keys),
            "image": pa.array(structs, pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            "caption": list(captions),
            "label": list(labels),
        }
    )
    parquet_path = root / "pairs.parquet"
    pq.write_table(table, parquet_path, row_group_size=max(1, per_tar))

    tar_folder = root / "shards"
    tar_folder.mkdir(exist_ok=True)
    tars = []
    for t, first in enumerate(range(0, n, per_tar)):
        path = tar_folder / f"shard-{t:04d}.tar"
        with tarfile.open(path, "w") as archive:
            for i in range(first, min(n, first + per_tar)):
                members = {
                    suffixes[i]: images[i].read_bytes(),
                    "txt": captions[i].encode(),
                    "cls": labels[i].encode(),
                    "json": json.dumps({"caption": captions[i], "label": labels[i]}).encode(),
                }
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{keys[i]}.{ext}")
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
        tars.append(path)

    zip_path = root / "pairs.zip"
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for i in range(n):
            archive.writestr(f"{keys[i]}.{suffixes[i]}", images[i].read_bytes())
            archive.writestr(f"{keys[i]}.txt", captions[i])
            archive.writestr(f"{keys[i]}.cls", labels[i])
    return RecordsCorpus(
        root=root,
        csv=csv_path,
        parquet=parquet_path,
        tars=tuple(tars),
        zip=zip_path,
        keys=keys,
        images=tuple(images),
        captions=captions,
        labels=labels,
    )
