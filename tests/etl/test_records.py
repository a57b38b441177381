"""Records bakes: the same records from a CSV naming files, an HF-style Parquet with embedded
bytes, WebDataset tar shards (local and on S3) and a zip archive bake to the same aligned rows;
broken records are rejected whole, naming the record, the field and the reason."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import datakiln
from datakiln.errors import SourceError, SpecError
from datakiln.etl.bake import bake, plan_only
from datakiln.etl.spec import BakeSpec
from datakiln.testing.records_corpus import CLASSES, write_records_corpus

SIZE = 24
MAX_LENGTH = 12


def fields(image_column: str = "image", caption: str = "caption", label: str = "label") -> dict:
    return {
        "images": {"modality": "image", "column": image_column, "height": SIZE, "width": SIZE},
        "captions": {"modality": "text", "column": caption, "max_length": MAX_LENGTH},
        "labels": {"modality": "label", "column": label},
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    return write_records_corpus(tmp_path_factory.mktemp("records"), n=23, per_tar=10)


def _bake(sources, out, field_tables, **kw) -> datakiln.CachedDataset:
    spec = BakeSpec(
        sources=tuple(map(str, sources)), output=str(out), shard_size=8, fields=field_tables, **kw
    )
    report = bake(spec)
    assert report.inputs == report.baked + report.rejected
    return datakiln.open_cache(str(out), storage_options=kw.get("output_storage_options"))


def _rows(dataset, keys_by_position=None) -> dict[str, dict]:
    meta = dataset.metadata().to_pylist()
    batch = dataset.get_batch(indices=list(range(len(dataset))))
    out = {}
    for k, row in enumerate(meta):
        key = row["record"]
        if keys_by_position is not None:
            key = keys_by_position[row["position"]]
        out[key] = {name: value[k] for name, value in batch.items() if name != "indices"}
    return out


def _expected_row(path: Path, caption: str) -> tuple[np.ndarray, np.ndarray]:
    """The record's own image through the same decode and kernel, and its caption through the
    tokenizer: what its row must hold."""
    from datakiln.datasets.tokenize import word_hash_tokenize
    from datakiln.etl.kernels.image import ImageResizer
    from datakiln.readers.image import decode_image

    decoded = decode_image(path.read_bytes(), representation="rgb", height=SIZE, width=SIZE)
    pixels = np.zeros((1, SIZE, SIZE, 3), np.uint8)
    ImageResizer(height=SIZE, width=SIZE).resize([decoded], out=pixels)
    tokens, _ = word_hash_tokenize(caption, vocab_size=10000, max_length=MAX_LENGTH)
    return pixels[0], tokens


def test_every_container_bakes_the_same_aligned_rows(corpus, tmp_path):
    keys = corpus.keys
    from_csv = _rows(_bake([corpus.csv], tmp_path / "csv", fields()), keys)
    from_parquet = _rows(_bake([corpus.parquet], tmp_path / "pq", fields()), keys)
    from_tar = _rows(
        _bake([corpus.root / "shards"], tmp_path / "tar", fields("jpg;png", "txt", "cls"))
    )
    from_zip = _rows(_bake([corpus.zip], tmp_path / "zip", fields("jpg;png", "txt", "cls")))
    from_json = _rows(
        _bake(
            [corpus.root / "shards"], tmp_path / "json", fields("jpg", "json.caption", "json.label")
        )
    )
    assert set(from_csv) == set(keys)
    for other in (from_parquet, from_tar, from_zip, from_json):
        assert set(other) == set(keys)
        for key in keys:
            for name in ("images", "captions", "labels", "captions_text"):
                assert np.array_equal(
                    np.asarray(other[key][name]), np.asarray(from_csv[key][name])
                ), (key, name)
    # row by row: the record's own image and caption
    for i, key in enumerate(keys):
        pixels, tokens = _expected_row(corpus.images[i], corpus.captions[i])
        np.testing.assert_allclose(from_csv[key]["images"], pixels / 255.0, atol=1e-6)
        assert np.array_equal(from_csv[key]["captions"], tokens)
        assert from_csv[key]["captions_text"] == corpus.captions[i]
        assert CLASSES[from_csv[key]["labels"]] == corpus.labels[i]


def test_metadata_names_source_position_uri_and_hash(corpus, tmp_path):
    import hashlib

    dataset = _bake([corpus.csv], tmp_path / "c", fields())
    meta = dataset.metadata().to_pylist()
    assert [m["position"] for m in meta] == list(range(len(corpus.keys)))
    for m in meta:
        path = corpus.images[m["position"]]
        assert m["source"].endswith("captions.csv")
        assert m["images_uri"] == f"file://{path.resolve()}"
        assert m["images_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert m["captions"] == corpus.captions[m["position"]]
    tar = _bake([corpus.tars[0]], tmp_path / "t", fields("jpg", "txt", "cls"))
    first = tar.metadata().to_pylist()[0]
    assert first["record"] == corpus.keys[0]
    assert first["images_uri"].endswith(f"shard-0000.tar#{corpus.keys[0]}.jpg")
    assert first["images_sha256"] == hashlib.sha256(corpus.images[0].read_bytes()).hexdigest()


def test_toml_spec_names_fields(corpus, tmp_path):
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(
        f"""
sources = ["{corpus.parquet}"]
output = "cache/pairs"
[fields.images]
modality = "image"
column = "image"
height = 16
width = 16
[fields.captions]
modality = "text"
column = "caption"
max_length = 16
[fields.labels]
modality = "label"
column = "label"
"""
    )
    spec = BakeSpec.from_toml(spec_path)
    assert spec.modality == "records"
    report = bake(spec)
    assert report.baked == len(corpus.keys)
    batch = datakiln.open_cache(str(tmp_path / "cache/pairs")).get_batch(indices=[0, 1])
    assert batch["images"].shape == (2, 16, 16, 3)
    assert batch["captions"].shape == (2, 16)
    assert batch["labels"].dtype == np.int32
    # and the same table round-trips through the manifest's spec
    assert BakeSpec.from_dict({**spec.to_dict(), "output": "x"}).key_dict() == spec.key_dict()


def test_unknown_field_key_and_missing_column_are_clear(corpus, tmp_path):
    with pytest.raises(SpecError, match="did you mean 'height'"):
        BakeSpec(sources=("x.csv",), output="o", fields={"i": {"modality": "image", "hieght": 3}})
    with pytest.raises(SpecError, match="unknown field modality"):
        BakeSpec(sources=("x.csv",), output="o", fields={"i": {"modality": "imag"}})
    spec = BakeSpec(
        sources=(str(corpus.csv),), output=str(tmp_path / "o"), fields=fields(caption="captoin")
    )
    with pytest.raises(SpecError, match=r"column 'captoin'.*'key', 'image', 'caption', 'label'"):
        bake(spec)


def _rejected(out: Path) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    return pq.read_table(out / manifest["rejected"]).to_pylist()


def test_broken_records_are_rejected_whole_with_field_and_reason(corpus, tmp_path):
    import csv

    root = tmp_path / "broken"
    root.mkdir()
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    rows = [
        [str(corpus.images[0]), "a fine record", "cat"],
        [str(root / "gone.jpg"), "missing file", "dog"],
        [str(root / "broken.jpg"), "broken bytes", "owl"],
        [str(corpus.images[1]), "", "cat"],
        [str(corpus.images[2]), "no label", ""],
    ]
    with (root / "t.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption", "label"])
        writer.writerows(rows)
    dataset = _bake([root / "t.csv"], root / "out", fields())
    assert len(dataset) == 1
    rejected = {r["record"]: r for r in _rejected(root / "out")}
    assert set(rejected) == {"row 1", "row 2", "row 3", "row 4"}
    assert rejected["row 1"]["field"] == "images"
    assert rejected["row 1"]["stage"] == "fetch"
    assert "gone.jpg" in rejected["row 1"]["message"]
    assert rejected["row 2"]["field"] == "images"
    assert rejected["row 2"]["stage"] in (
        "open",
        "decode",
    )
    assert rejected["row 3"]["field"] == "captions"
    assert rejected["row 4"]["field"] == "labels"
    assert all(r["uri"].endswith("t.csv") for r in rejected.values())


def test_null_struct_in_parquet_is_rejected(corpus, tmp_path):
    import pyarrow as pa

    table = pq.read_table(corpus.parquet)
    images = table.column("image").to_pylist()
    images[3] = None
    images[5] = {"bytes": None, "path": None}
    table = table.set_column(1, "image", pa.array(images, table.schema.field("image").type))
    path = tmp_path / "nulls.parquet"
    pq.write_table(table, path)
    dataset = _bake([path], tmp_path / "out", fields())
    assert len(dataset) == len(corpus.keys) - 2
    rejected = {r["record"]: r for r in _rejected(tmp_path / "out")}
    assert set(rejected) == {"row 3", "row 5"}
    assert {r["field"] for r in rejected.values()} == {"images"}


def _tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_truncated_tar_orphans_and_duplicate_keys(corpus, tmp_path):
    jpg = [p.read_bytes() for p in corpus.images[:4]]
    members = [
        ("a.jpg", jpg[0]),
        ("a.txt", b"first"),
        ("a.cls", b"cat"),
        ("b.txt", b"an orphan caption"),  # no image
        ("c.jpg", jpg[1]),
        ("c.txt", b"dup one"),
        ("c.txt", b"dup two"),
        ("c.cls", b"dog"),
        ("d.jpg", jpg[2]),
        ("d.txt", b"last"),
        ("d.cls", b"owl"),
    ]
    data = _tar_bytes(members)
    folder = tmp_path / "tars"
    folder.mkdir()
    (folder / "good.tar").write_bytes(data)
    cut = data.index(b"d.jpg\x00") + 512 + 100  # inside d.jpg's data
    (folder / "cut.tar").write_bytes(data[:cut])
    spec_fields = fields("jpg", "txt", "cls")
    spec_fields["labels"]["classes"] = list(CLASSES)
    dataset = _bake([folder], tmp_path / "out", spec_fields)
    rejected = [
        (r["uri"].rsplit("/", 1)[1], r["record"], r["error_type"])
        for r in _rejected(tmp_path / "out")
    ]
    assert sorted(rejected) == sorted(
        [
            ("cut.tar", "b", "MissingField"),
            ("cut.tar", "c", "DuplicateKey"),
            ("cut.tar", "d", "TruncatedArchive"),
            ("good.tar", "b", "MissingField"),
            ("good.tar", "c", "DuplicateKey"),
        ]
    )
    texts = sorted(dataset.get_batch(indices=list(range(len(dataset))))["captions_text"])
    assert texts == ["first", "first", "last"]


def test_unreadable_zip_entry_is_rejected(corpus, tmp_path):
    path = tmp_path / "z.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for i in range(3):
            archive.writestr(f"{i}.jpg", corpus.images[i].read_bytes())
            archive.writestr(f"{i}.txt", corpus.captions[i])
            archive.writestr(f"{i}.cls", corpus.labels[i])
    raw = bytearray(path.read_bytes())
    target = corpus.images[1].read_bytes()[-120:-80]  # entropy-coded: unique to this image
    at = raw.index(target)
    raw[at : at + 8] = b"\x00" * 8  # stored member no longer matches its CRC-32
    path.write_bytes(bytes(raw))
    dataset = _bake([path], tmp_path / "out", fields("jpg", "txt", "cls"))
    assert len(dataset) == 2
    (rejection,) = _rejected(tmp_path / "out")
    assert rejection["record"] == "1"
    assert rejection["field"] == "images"
    assert "CRC" in rejection["message"]


@pytest.mark.parametrize(
    "method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]
)
def test_zip_members_in_every_method_zipfile_writes_bake_the_same_rows(corpus, tmp_path, method):
    path = tmp_path / "z.zip"
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        for i in range(4):
            archive.writestr(f"{i}.jpg", corpus.images[i].read_bytes())
            archive.writestr(f"{i}.txt", corpus.captions[i])
            archive.writestr(f"{i}.cls", corpus.labels[i])
    rows = _rows(_bake([path], tmp_path / "out", fields("jpg", "txt", "cls")))
    assert sorted(rows) == ["0", "1", "2", "3"]
    for i in range(4):
        pixels, tokens = _expected_row(corpus.images[i], corpus.captions[i])
        np.testing.assert_allclose(rows[str(i)]["images"], pixels / 255.0, atol=1e-6)
        assert np.array_equal(rows[str(i)]["captions"], tokens)


def test_changed_image_behind_unchanged_table_rebakes_its_shard(corpus, tmp_path):
    import shutil

    root = tmp_path / "inc"
    shutil.copytree(corpus.root, root)
    out = tmp_path / "out"
    spec = BakeSpec(
        sources=(str(root / "captions.csv"),), output=str(out), shard_size=8, fields=fields()
    )
    first = bake(spec)
    assert bake(spec).up_to_date
    from PIL import Image

    target = root / "images" / "00009.jpg"
    Image.new("RGB", (30, 30), (10, 200, 30)).save(target)
    summary = plan_only(spec)
    assert not summary.up_to_date
    assert any("00009.jpg" in line for line in summary.lines())
    assert summary.shards - summary.shards_done == 1
    second = bake(spec)
    assert second.shards_skipped == first.shards - 1
    dataset = datakiln.open_cache(str(out))
    row = (
        dataset.metadata()
        .to_pylist()
        .index(next(m for m in dataset.metadata().to_pylist() if m["position"] == 9))
    )
    pixels = dataset.get_batch(indices=[row])["images"][0]
    np.testing.assert_allclose(pixels[12, 12], np.array([10, 200, 30]) / 255, atol=2 / 255)


def test_tar_shards_on_s3_bake_the_same_rows(corpus, s3_options, tmp_path):
    import s3fs

    bucket, options = s3_options
    fs = s3fs.S3FileSystem(**options)
    for tar in corpus.tars:
        fs.put_file(str(tar), f"{bucket}/shards/{tar.name}")
    remote = _rows(
        _bake(
            [f"{bucket}/shards/*.tar"],
            tmp_path / "s3",
            fields("jpg", "txt", "cls"),
            storage_options=options,
        )
    )
    local = _rows(_bake([corpus.root / "shards"], tmp_path / "local", fields("jpg", "txt", "cls")))
    assert set(remote) == set(local) == set(corpus.keys)
    for key in corpus.keys:
        assert np.array_equal(remote[key]["images"], local[key]["images"])
        assert np.array_equal(remote[key]["captions"], local[key]["captions"])


def test_parquet_with_bytes_on_s3_bakes_the_same_rows(corpus, s3_options, tmp_path):
    """Object-store tables go through fsspec (local ones through Arrow's own file)."""
    import s3fs

    bucket, options = s3_options
    s3fs.S3FileSystem(**options).put_file(str(corpus.parquet), f"{bucket}/t/pairs.parquet")
    remote = _rows(
        _bake([f"{bucket}/t/pairs.parquet"], tmp_path / "s3", fields(), storage_options=options),
        corpus.keys,
    )
    local = _rows(_bake([corpus.parquet], tmp_path / "local", fields()), corpus.keys)
    assert set(remote) == set(local) == set(corpus.keys)
    for key in corpus.keys:
        for name in ("images", "captions", "labels"):
            assert np.array_equal(remote[key][name], local[key][name]), (key, name)


def test_guide_paired_dataset_over_a_records_cache(corpus, tmp_path):
    dataset = _bake([corpus.csv], tmp_path / "c", fields())
    paired = datakiln.MultiModalPairedDataset(pairs=[("images", "captions")], data=dataset)
    assert len(paired) == len(dataset)
    sample = paired[3]
    assert sample["images"].shape == (SIZE, SIZE, 3)
    assert sample["captions"].shape == (MAX_LENGTH,)
    assert sample["alignment_scores"] == 1.0
    whole = dataset.get_batch(indices=[3])
    assert np.array_equal(sample["images"], whole["images"][0])
    pair = paired.pair_batch(("images", "captions"), [0, 2])
    assert set(pair) == {"images", "captions", "alignment_scores", "indices"}
    with pytest.raises(SpecError, match="missing \\['audio'\\]"):
        datakiln.MultiModalPairedDataset(pairs=[("images", "audio")], data=dataset)


def test_folder_of_files_as_records_matches_the_image_bake(image_corpus, tmp_path):
    root = str(image_corpus.root)
    images = datakiln.open_cache(_image_bake(root, tmp_path / "images"))
    records = _bake(
        [root],
        tmp_path / "records",
        {
            "images": {"modality": "image", "column": "file", "height": SIZE, "width": SIZE},
            "labels": {"modality": "label", "column": "parent"},
        },
    )
    assert len(records) == len(images)
    by_uri = {m["uri"]: k for k, m in enumerate(images.metadata().to_pylist())}
    a = images.get_batch(indices=list(range(len(images))))
    b = records.get_batch(indices=list(range(len(records))))
    names = records.manifest["label_classes"]["labels"]
    for k, meta in enumerate(records.metadata().to_pylist()):
        j = by_uri[meta["images_uri"]]
        assert np.array_equal(a["images"][j], b["images"][k])
        assert images.class_names[a["labels"][j]] == names[b["labels"][k]]
    rejected = _rejected(tmp_path / "records")
    assert len(rejected) == len(image_corpus.broken)
    assert {r["field"] for r in rejected} == {"images"}


def _image_bake(root: str, out: Path) -> str:
    spec = BakeSpec(
        sources=(root,),
        output=str(out),
        shard_size=8,
        image={"height": SIZE, "width": SIZE, "labels": "parent"},
    )
    bake(spec)
    return str(out)


def test_optional_field_gets_a_validity_mask(corpus, tmp_path):
    import csv

    path = tmp_path / "t.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        writer.writerow([corpus.images[0], "has a caption"])
        writer.writerow([corpus.images[1], ""])
    spec_fields = fields()
    del spec_fields["labels"]
    spec_fields["captions"]["required"] = False
    dataset = _bake([path], tmp_path / "out", spec_fields)
    assert len(dataset) == 2
    batch = dataset.get_batch(indices=[0, 1])
    assert batch["captions_valid"].tolist() == [True, False]
    assert batch["captions_lengths"].tolist()[1] == 0
    assert _rejected(tmp_path / "out") == []


def test_legacy_encodings_in_tables_and_members(corpus, tmp_path):
    captions = ["café crème brûlée", "naïve façade à la carte", "smörgåsbord für alle"]
    table = "image,caption\n" + "".join(f"{corpus.images[i]},{c}\n" for i, c in enumerate(captions))
    (tmp_path / "latin.csv").write_bytes(table.encode("latin-1"))
    dataset = _bake(
        [tmp_path / "latin.csv"],
        tmp_path / "t",
        {k: v for k, v in fields().items() if k != "labels"},
    )
    assert dataset.get_batch(indices=[0, 1, 2])["captions_text"] == captions
    # cp1252 decodes every Latin-1 letter the same way, and is what the detector prefers
    assert set(dataset.metadata().column("source_encoding").to_pylist()) <= {"cp1252", "iso8859-1"}

    japanese = ["東京の夜景はとても美しいです", "猫が窓のそばで眠っています"]
    members = []
    for i, text in enumerate(japanese):
        members += [
            (f"{i}.jpg", corpus.images[i].read_bytes()),
            (f"{i}.txt", text.encode("shift_jis")),
        ]
    (tmp_path / "sjis.tar").write_bytes(_tar_bytes(members))
    spec_fields = {k: v for k, v in fields("jpg", "txt").items() if k != "labels"}
    spec_fields["captions"]["encoding"] = "auto"
    dataset = _bake([tmp_path / "sjis.tar"], tmp_path / "s", spec_fields)
    assert dataset.get_batch(indices=[0, 1])["captions_text"] == japanese
    codecs = dataset.metadata().column("captions_encoding").to_pylist()
    assert all(c in ("shift_jis", "cp932") for c in codecs), codecs


def test_incremental_records_append_and_retire(tmp_path):
    import shutil

    from tests.conftest import write_small_images

    root = tmp_path / "pics"
    write_small_images(root, [f"c/{i:03d}.png" for i in range(20)])
    spec = BakeSpec(
        sources=(str(root),),
        output=str(tmp_path / "out"),
        shard_size=8,
        fields={"images": {"modality": "image", "column": "file", "height": 8, "width": 8}},
    )
    assert bake(spec).shards == 3
    write_small_images(root, ["c/aaa.png"], seed=5)  # sorts first: nothing else moves
    summary = plan_only(spec)
    assert (summary.shards, summary.shards_done, summary.new_inputs) == (4, 3, 1)
    report = bake(spec)
    assert (report.shards_skipped, report.baked) == (3, 21)
    shutil.copy(root / "c" / "aaa.png", root / "c" / "005.png")  # changes one file
    report = bake(spec)
    assert report.baked == 21
    assert report.shards_skipped == 3  # the changed file's shard of 8 is baked again, appended
    dataset = datakiln.open_cache(str(tmp_path / "out"))
    uris = [m["images_uri"] for m in dataset.metadata().to_pylist()]
    assert sorted(uris) == sorted(f"file://{p}" for p in root.rglob("*.png"))


def test_lines_source_bakes_one_record_per_non_blank_line(tmp_path):
    """``source_format = "lines"``: plain text files, a record per non-blank line (CRLF and a
    Latin-1 file included), keyed by line number; a folder yields its .txt files only then."""
    from datakiln.datasets.tokenize import word_hash_tokenize

    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"the first line\r\n\r\nthe third line\r\n")
    (folder / "b.txt").write_bytes("café crème\n\n\nnaïve façade\n".encode("latin-1"))
    (folder / "notes.md").write_text("not a source\n")
    spec_fields = {
        "captions": {"modality": "text", "column": "text", "max_length": MAX_LENGTH},
        "line": {"modality": "scalar", "column": "line"},
    }
    dataset = _bake([folder], tmp_path / "out", spec_fields, source_format="lines")
    expected = {
        ("a.txt", "line 1"): "the first line",
        ("a.txt", "line 3"): "the third line",
        ("b.txt", "line 1"): "café crème",
        ("b.txt", "line 4"): "naïve façade",
    }
    meta = dataset.metadata().to_pylist()
    row_of = {(m["source"].rsplit("/", 1)[-1], m["record"]): k for k, m in enumerate(meta)}
    assert sorted(row_of) == sorted(expected)
    batch = dataset.get_batch(indices=list(range(len(dataset))))
    for (name, key), text in expected.items():
        k = row_of[(name, key)]
        assert batch["captions_text"][k] == text
        assert int(batch["line"][k]) == int(key.split()[1])
        tokens, _ = word_hash_tokenize(text, vocab_size=10000, max_length=MAX_LENGTH)
        np.testing.assert_array_equal(batch["captions"][k], tokens)
    # without the source named, the same folder holds no record inputs
    with pytest.raises(SourceError, match="matched no files"):
        _bake([folder], tmp_path / "none", spec_fields)


def test_embedded_bytes_count_as_bytes_in_like_the_files_they_replace(corpus, tmp_path):
    reports = {}
    for name, source in (("csv", corpus.csv), ("parquet", corpus.parquet)):
        spec = BakeSpec(sources=(str(source),), output=str(tmp_path / name), fields=fields())
        reports[name] = bake(spec)
    assert reports["csv"].bytes_in > 0
    assert reports["parquet"].bytes_in == reports["csv"].bytes_in


@pytest.mark.parametrize("kind", ["binary", "large_binary", "struct", "path"])
def test_integer_labels_and_every_image_column_type_commit(corpus, tmp_path, kind):
    """Integer class ids with no names (their counts as wide as the largest id), beside the
    column types Parquet images come in: the same pixels from each."""
    import pyarrow as pa

    paths = sorted((corpus.root / "images").iterdir())[:12]
    raw = [p.read_bytes() for p in paths]
    column = {
        "binary": pa.array(raw, pa.binary()),
        "large_binary": pa.array(raw, pa.large_binary()),
        "struct": pa.array(
            [{"bytes": b, "path": p.name} for b, p in zip(raw, paths, strict=True)],
            pa.struct([("bytes", pa.large_binary()), ("path", pa.large_string())]),
        ),
        "path": pa.array([str(p) for p in paths], pa.large_string()),
    }[kind]
    table = tmp_path / "t.parquet"
    ids = [k % 5 for k in range(len(paths))]
    pq.write_table(pa.table({"image": column, "label": ids}), table, row_group_size=5)
    image_field = {"modality": "image", "column": "image", "height": SIZE, "width": SIZE}
    dataset = _bake(
        [table],
        tmp_path / "out",
        {"images": image_field, "labels": {"modality": "label", "column": "label"}},
    )
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["class_names"] == []
    assert manifest["class_counts"] == np.bincount(ids).tolist()
    batch = dataset.get_batch(indices=list(range(len(dataset))))
    assert batch["labels"].tolist() == ids
    for k, path in enumerate(paths):
        pixels, _ = _expected_row(path, "")
        np.testing.assert_allclose(batch["images"][k], pixels / 255.0, atol=1e-6)


@pytest.mark.parametrize("ending", [".tar.gz", ".tgz", ".tar.xz"])
def test_compressed_tar_shards_are_refused_with_the_reason(tmp_path, ending):
    shard = tmp_path / f"shard{ending}"
    shard.write_bytes(b"not read")
    spec = BakeSpec(sources=(str(shard),), output=str(tmp_path / "out"), fields=fields("jpg"))
    with pytest.raises(SpecError, match=r"compressed tar.*decompress the shards first"):
        plan_only(spec)


def test_a_table_with_a_header_and_no_rows_bakes_an_empty_cache(tmp_path):
    table = tmp_path / "empty.csv"
    table.write_text("image,caption,label\n")
    report = bake(BakeSpec(sources=(str(table),), output=str(tmp_path / "out"), fields=fields()))
    assert (report.inputs, report.baked, report.rejected) == (0, 0, 0)
    assert len(datakiln.open_cache(str(tmp_path / "out"))) == 0


def test_a_member_extension_no_archive_has_is_a_clear_error(corpus, tmp_path):
    spec = BakeSpec(
        sources=(str(corpus.root / "shards"),),
        output=str(tmp_path / "out"),
        fields=fields("jpg", "txt", "clss"),  # a typo: every record would be rejected
    )
    with pytest.raises(SpecError, match=r"'labels' reads member extension 'clss'.*'cls'"):
        plan_only(spec)
