"""End-to-end text bakes: every source format, decoding policies, counts, tokens, stores, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import datakiln
from datakiln.cache.open import CachedDataset, open_cache
from datakiln.datasets.testing import DatasetTests, assert_same
from datakiln.datasets.tokenize import word_hash_tokenize
from datakiln.etl.bake import bake
from datakiln.etl.modalities import get_modality
from datakiln.etl.plan import generation_key
from datakiln.etl.spec import BakeSpec, TextBakeParams

PARAMS = {"max_length": 12, "vocab_size": 5000, "field": "text"}

LONG = " ".join(f"word{i}" for i in range(15))  # more tokens than max_length: truncated
# Every source format, with what it must give: (records in file order, rejections by reason).
CORPUS: dict[str, tuple[bytes, list[str], dict[str, int]]] = {
    "lines.txt": (
        (
            "\ufeffHello World\r\n\r\n  \t \nÜnïcödé ß straße 東京 🎉 e\u0301\n"
            "tabs\tand   spaces\n" + LONG + "\nlast line without newline"
        ).encode(),
        [
            "Hello World",
            "Ünïcödé ß straße 東京 🎉 e\u0301",
            "tabs\tand   spaces",
            LONG,
            "last line without newline",
        ],
        {"validate: EmptySample": 2},
    ),
    "data.jsonl": (
        b'{"text": "json one"}\n{"text": "json two, longer", "x": 1}\n{bad json\n'
        b'{"other": "x"}\n{"text": null}\n{"text": 5}\n\n{"text": "json \\u00e9 three"}\n',
        ["json one", "json two, longer", "json é three"],
        {
            "parse: JSONDecodeError": 1,
            "parse: MissingField": 1,
            "validate: EmptySample": 2,
            "validate: NotText": 1,
        },
    ),
    "data.csv": (
        b'id,text\r\n1,csv one\r\n2,"quoted, with comma"\r\n3,"multi\nline"\r\n4\r\n',
        ["csv one", "quoted, with comma", "multi\nline"],
        {"parse: MalformedRow": 1},
    ),
    "data.tsv": (b"id\ttext\n1\ttsv one\n2\ttsv two\n", ["tsv one", "tsv two"], {}),
    "bad.txt": (
        b"good line\nbad \xff\xfe line\nanother good\n",
        ["good line", "another good"],
        {"decode: UnicodeDecodeError": 1},
    ),
    "zbinary.txt": (
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x01",
        [],
        {"decode: BinaryContent": 1},
    ),
}
PARQUET_TEXTS = ["pq one", None, "pq three", "", "pq five", "pq six"]


def _write_corpus(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, (data, _, _) in CORPUS.items():
        (root / name).write_bytes(data)
    table = pa.table({"text": PARQUET_TEXTS, "n": list(range(len(PARQUET_TEXTS)))})
    pq.write_table(table, root / "data.parquet", row_group_size=2)
    return root


def _expected() -> tuple[list[str], dict[str, int]]:
    """Records in dataset order (files sorted by name) and rejections by reason."""
    files = {
        **{n: (r, rej) for n, (_, r, rej) in CORPUS.items()},
        "data.parquet": (["pq one", "pq three", "pq five", "pq six"], {"validate: EmptySample": 2}),
    }
    records, reasons = [], {}
    for name in sorted(files):
        records += files[name][0]
        for reason, count in files[name][1].items():
            reasons[reason] = reasons.get(reason, 0) + count
    return records, reasons


def _reference_tokens(text: str, params: TextBakeParams) -> tuple[np.ndarray, int]:
    return word_hash_tokenize(
        text,
        vocab_size=params.vocab_size,
        max_length=params.max_length,
        pad_token_id=params.pad_token_id,
        unk_token_id=params.unk_token_id,
        bos_token_id=params.bos_token_id,
        eos_token_id=params.eos_token_id,
        case_sensitive=params.case_sensitive,
    )


@pytest.fixture(scope="module")
def baked(tmp_path_factory):
    root = _write_corpus(tmp_path_factory.mktemp("text") / "corpus")
    out = str(root.parent / "cache")
    spec = BakeSpec(sources=(str(root),), output=out, modality="text", text=PARAMS, shard_size=4)
    return spec, bake(spec)


def test_counts_add_up_over_every_format(baked):
    spec, report = baked
    records, reasons = _expected()
    assert report.baked == len(records)
    assert report.rejected == sum(reasons.values())
    assert report.inputs == report.baked + report.rejected
    assert dict(report.rejected_by_reason) == reasons
    manifest = json.loads((Path(spec.output) / "manifest.json").read_text())
    blank = reasons["validate: EmptySample"]  # blank lines, null and empty values
    assert manifest["counts"] == {
        "inputs": report.inputs,
        "baked": report.baked,
        "rejected": report.rejected,
        "blank": blank,
    }
    assert report.blank == blank
    assert report.summary_line() == (
        f"inputs {report.inputs} = baked {report.baked} + rejected {report.rejected} "
        f"({blank} blank, {report.rejected - blank} broken)"
    )
    rejected = pq.read_table(Path(spec.output) / manifest["rejected"]).to_pylist()
    assert all(r["uri"] and r["stage"] and r["message"] for r in rejected)
    bad = [r for r in rejected if r["error_type"] == "UnicodeDecodeError"]
    assert bad[0]["uri"].endswith("bad.txt")
    assert bad[0]["position"] == len(b"good line\n")


def test_texts_are_decoded_normalised_and_in_order(baked):
    spec, _ = baked
    dataset = open_cache(spec.output)
    records, _ = _expected()
    batch = dataset.read_batch(np.arange(len(dataset)))
    assert batch["texts"] == records  # BOM stripped, CRLF normalised, quoted CSV kept whole
    assert [dataset.get_sample_text(i) for i in range(len(dataset))] == records
    meta = dataset.metadata().to_pylist()
    assert [m["text"] for m in meta] == records
    lines = [m for m in meta if m["uri"].endswith("lines.txt")]
    data = CORPUS["lines.txt"][0]
    for m in lines:  # positions are byte offsets of the lines in the file
        assert (
            data[m["position"] :]
            .decode("utf-8", "replace")
            .lstrip("\ufeff")
            .startswith(m["text"].split("\n")[0])
        )


def test_tokens_equal_the_plain_python_reference(baked):
    spec, _ = baked
    dataset = open_cache(spec.output)
    batch = dataset.read_batch(np.arange(len(dataset)))
    assert batch["text_tokens"].dtype == np.int32
    assert batch["text_tokens"].shape == (len(dataset), spec.text.max_length)
    for row, text in enumerate(batch["texts"]):
        tokens, length = _reference_tokens(text, spec.text)
        np.testing.assert_array_equal(batch["text_tokens"][row], tokens, err_msg=text)
        assert batch["text_lengths"][row] == length
    np.testing.assert_array_equal(dataset.token_lengths(), batch["text_lengths"])
    field = dataset.manifest["fields"]["text_tokens"]
    assert field["dtype"] == "uint16"
    assert field["transform"] == {"kind": "cast", "dtype": "int32"}


def test_padding_takes_no_bytes(tmp_path):
    """Short texts under a long max_length cost their tokens, not max_length each."""
    lines = [" ".join(f"w{k}" for k in range(n % 20)) or "x" for n in range(300)]
    (tmp_path / "short.txt").write_text("\n".join(lines) + "\n")
    spec = BakeSpec(
        sources=(str(tmp_path / "short.txt"),),
        output=str(tmp_path / "cache"),
        modality="text",
        shard_size=100,
        text=TextBakeParams(max_length=1024, vocab_size=5000),
    )
    bake(spec)
    dataset = open_cache(spec.output)
    field = dataset.manifest["fields"]["text_tokens"]
    assert field["chunk_shape"] == [64]
    tokens = Path(spec.output) / field["path"] / "c"
    stored = sum(p.stat().st_size for p in tokens.rglob("*") if p.is_file())
    # every row fits its first 64-token chunk; the index holds 16 entries of 16 bytes a row
    assert stored == len(lines) * (64 * 2 + 16 * 16) + 3 * 4  # + a crc32c per shard
    assert stored < len(lines) * 1024 * 2 / 5
    batch = dataset.read_batch(np.arange(len(dataset)))
    for row, text in enumerate(batch["texts"]):
        np.testing.assert_array_equal(
            batch["text_tokens"][row], _reference_tokens(text, spec.text)[0], err_msg=text
        )


def test_vocab_stats_and_tokenizer_identity_in_the_manifest(baked):
    spec, _ = baked
    dataset = open_cache(spec.output)
    batch = dataset.read_batch(np.arange(len(dataset)))
    real = np.arange(spec.text.max_length)[None, :] < batch["text_lengths"][:, None]
    stats = dataset.get_vocab_stats()
    assert stats["unique_tokens"] == len(np.unique(batch["text_tokens"][real]))
    assert stats["total_sequences"] == len(dataset)
    assert stats["n_tokens"] == int(batch["text_lengths"].sum())
    assert (
        stats["length_histogram"]
        == np.bincount(batch["text_lengths"], minlength=spec.text.max_length + 1).tolist()
    )
    assert stats["n_truncated"] == sum(
        len(t.casefold().split()) + 2 > spec.text.max_length for t in batch["texts"]
    )
    assert stats["n_truncated"] >= 1  # LONG
    assert 0 < stats["coverage"] < 1
    tokenizer = dataset.manifest["tokenizer"]
    assert (tokenizer["name"], tokenizer["hash"]) == ("word_hash", "fnv1a-32")
    assert tokenizer["vocab_size"] == spec.text.vocab_size
    other = BakeSpec.from_dict(
        {**spec.to_dict(), "text": {**PARAMS, "tokenizer": "byte", "vocab_size": 300}}
    )
    assert generation_key(other) != generation_key(spec)
    assert get_modality("text").manifest_entries(other)["tokenizer"]["hash"] is None


def test_fast_reader_matches_zarr_python(baked):
    spec, _ = baked
    fast = open_cache(spec.output)
    reference = CachedDataset(spec.output, fast=False)
    indices = np.array([len(fast) - 1, 0, 3, 3, 7], dtype=np.int64)
    assert_same(fast.read_batch(indices), reference.read_batch(indices))


def test_replace_policy_keeps_undecodable_lines(tmp_path):
    (tmp_path / "bad.txt").write_bytes(CORPUS["bad.txt"][0])
    spec = BakeSpec(
        sources=(str(tmp_path / "bad.txt"),),
        output=str(tmp_path / "cache"),
        modality="text",
        text={**PARAMS, "errors": "replace"},
    )
    report = bake(spec)
    assert (report.inputs, report.baked, report.rejected) == (3, 3, 0)
    texts = open_cache(spec.output).read_batch(np.arange(3))["texts"]
    assert texts == ["good line", "bad \ufffd\ufffd line", "another good"]


def test_one_sample_per_file(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    bodies = {"a.txt": "first doc\nwith two lines\n", "b.txt": "second\r\ndoc", "c.txt": ""}
    for name, body in bodies.items():
        (docs / name).write_text(body, newline="")
    spec = BakeSpec(
        sources=(str(docs),),
        output=str(tmp_path / "cache"),
        modality="text",
        text={"max_length": 8, "one_per_file": True},
    )
    report = bake(spec)
    assert (report.inputs, report.baked, report.rejected) == (3, 2, 1)
    assert dict(report.rejected_by_reason) == {"validate: EmptySample": 1}
    texts = open_cache(spec.output).read_batch(np.arange(2))["texts"]
    assert texts == ["first doc\nwith two lines\n", "second\ndoc"]


def test_byte_tokenizer(tmp_path):
    (tmp_path / "t.txt").write_text("Héllo\nab\n")
    spec = BakeSpec(
        sources=(str(tmp_path / "t.txt"),),
        output=str(tmp_path / "cache"),
        modality="text",
        text={"tokenizer": "byte", "vocab_size": 260, "max_length": 6},
    )
    bake(spec)
    dataset = open_cache(spec.output)
    assert dataset.manifest["fields"]["text_tokens"]["dtype"] == "uint16"
    tokens = dataset.read_batch(np.arange(2))["text_tokens"]
    for row, text in enumerate(["héllo", "ab"]):
        body = [b + 4 for b in text.encode()][:4]
        expected = [2, *body, 3] + [0] * (6 - len(body) - 2)
        assert tokens[row].tolist() == expected


def test_ranges_cut_mid_line_lose_and_repeat_nothing(tmp_path):
    rng = np.random.default_rng(0)
    words = ["a", "bb", "ccc", "dddd", "ünï", "🎉"]
    lines = [" ".join(rng.choice(words, rng.integers(1, 9))) for _ in range(300)]
    lines[17] = "x " * 60  # one line longer than target_bytes
    data = "\n".join(lines).encode() + b"\n"
    (tmp_path / "big.txt").write_bytes(data)
    params = {"target_bytes": 50, "max_length": 8}
    spec = BakeSpec(
        sources=(str(tmp_path / "big.txt"),),
        output=str(tmp_path / "cache"),
        modality="text",
        text=params,
        shard_size=16,
    )
    units = get_modality("text").plan_units(spec, datakiln.etl.plan.plan_files(spec).inputs)
    starts = [u.start for u in units]
    line_starts = {0, *(i + 1 for i, b in enumerate(data) if b == ord("\n"))}
    assert len(units) > 10
    assert set(starts) <= line_starts
    assert any(k * 50 not in line_starts for k in range(1, len(data) // 50))  # cuts mid-line
    assert all(u.capacity <= 16 for u in units)
    report = bake(spec)
    assert report.shards > 10
    assert (report.inputs, report.baked, report.rejected) == (300, 300, 0)
    dataset = open_cache(spec.output)
    assert dataset.read_batch(np.arange(300))["texts"] == lines  # whitespace kept as read
    offsets = [m["position"] for m in dataset.metadata().to_pylist()]
    assert offsets == sorted(line_starts - {len(data)})


def test_csv_cuts_respect_quoted_newlines(tmp_path):
    rows = "".join(f'{i},"row {i}\nsecond line"\n' for i in range(40))
    (tmp_path / "q.csv").write_text("id,text\n" + rows)
    spec = BakeSpec(
        sources=(str(tmp_path / "q.csv"),),
        output=str(tmp_path / "cache"),
        modality="text",
        text={**PARAMS, "target_bytes": 64},
        shard_size=5,
    )
    report = bake(spec)
    assert (report.baked, report.rejected) == (40, 0)
    assert report.shards > 4
    texts = open_cache(spec.output).read_batch(np.arange(40))["texts"]
    assert texts == [f"row {i}\nsecond line" for i in range(40)]


def test_incremental_bake_and_resume(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("".join(f"alpha {i}\n" for i in range(20)))
    spec = BakeSpec(
        sources=(str(src),),
        output=str(tmp_path / "cache"),
        modality="text",
        text={"max_length": 8},
        shard_size=8,
    )
    first = bake(spec)
    assert (first.baked, first.shards) == (20, 3)
    (src / "b.txt").write_text("".join(f"beta {i}\n" for i in range(5)))
    second = bake(spec)
    assert (second.inputs, second.baked, second.shards_skipped) == (25, 25, 3)
    dataset = open_cache(spec.output)
    assert dataset.read_batch(np.array([0, 24]))["texts"] == ["alpha 0", "beta 4"]
    assert bake(spec).up_to_date
    # resume: a bake killed before its commit keeps finished shards; the rerun skips them
    before = dataset.read_batch(np.arange(25))
    (src / "c.txt").write_text("gamma\n")
    (Path(spec.output) / "manifest.json").unlink()
    gen = Path(spec.output) / dataset.manifest["generation"] / "_shards"
    markers = sorted(gen.glob("*.json"))
    markers[-1].unlink()
    resumed = bake(spec)
    assert resumed.inputs == 26
    assert resumed.shards_skipped == len(markers) - 1
    after = open_cache(spec.output).read_batch(np.arange(25))
    assert_same(before, {**after, "indices": before["indices"]})
    # appending to a file retires its shards and bakes it again, after every committed row
    with (src / "a.txt").open("a") as f:
        f.write("alpha 20\n")
    appended = bake(spec)
    assert (appended.inputs, appended.baked, appended.rejected) == (27, 27, 0)
    texts = open_cache(spec.output).read_batch(np.arange(27))["texts"]
    assert sorted(texts) == sorted(
        [f"alpha {i}" for i in range(21)] + [f"beta {i}" for i in range(5)] + ["gamma"]
    )


def test_toml_spec_with_a_text_table(tmp_path):
    (tmp_path / "a.txt").write_text("one\ntwo\n")
    (tmp_path / "spec.toml").write_text(
        'sources = ["a.txt"]\noutput = "c"\nmodality = "text"\n'
        '[text]\nmax_length = 4\ntokenizer = "byte"\nvocab_size = 300\n'
    )
    spec = BakeSpec.from_toml(tmp_path / "spec.toml")
    assert spec.text == TextBakeParams(max_length=4, tokenizer="byte", vocab_size=300)
    assert bake(spec).baked == 2
    assert open_cache(str(tmp_path / "c"))[1]["text_tokens"].tolist() == [2, 120, 123, 3]


def test_loader_and_splits_serve_text(baked):
    spec, _ = baked
    dataset = open_cache(spec.output)
    loader = datakiln.Loader(
        dataset, batch_size=4, shuffle=True, seed=1, num_epochs=1, drop_last=False
    )
    seen = []
    for batch in loader:
        assert batch["text_tokens"].shape[1:] == (spec.text.max_length,)
        assert [dataset.get_sample_text(int(i)) for i in batch["indices"]] == batch["texts"]
        seen += np.asarray(batch["indices"]).tolist()
    assert sorted(seen) == list(range(len(dataset)))
    train, val = datakiln.split_dataset(dataset, 0.75, seed=0)
    assert len(train) + len(val) == len(dataset)
    sample = val[0]
    assert isinstance(sample["text"], str)
    assert sample["text_tokens"].dtype == np.int32
    head = open_cache(spec.output, split="train[:50%]")
    assert head[0]["text"] == dataset[0]["text"]


def test_object_store_source_and_output(memory_root):
    fs = fsspec.filesystem("memory")
    root = memory_root.removeprefix("memory://")
    fs.pipe_file(f"{root}/src/a.jsonl", b'{"text": "remote one"}\n{"text": "remote two"}\n')
    spec = BakeSpec(
        sources=(f"{memory_root}/src/a.jsonl",),
        output=f"{memory_root}/cache",
        modality="text",
        text=PARAMS,
    )
    assert bake(spec).baked == 2
    dataset = open_cache(spec.output)
    assert dataset.read_batch(np.array([1, 0, 1]))["texts"] == [
        "remote two",
        "remote one",
        "remote two",
    ]
    assert_same(
        dataset.read_batch(np.arange(2)),
        CachedDataset(spec.output, fast=False).read_batch(np.arange(2)),
    )


class TestTextCacheIsADataset(DatasetTests):
    @pytest.fixture
    def dataset(self, baked):
        return open_cache(baked[0].output, rngs=0)


# -- the command line --------------------------------------------------------------------------


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "datakiln", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_cli_bakes_inspects_and_previews_text(tmp_path):
    _write_corpus(tmp_path / "corpus")
    # the modality comes from the file ending; a Parquet source must exit 0 (no abort at exit)
    result = _run(
        "bake",
        "corpus/*.parquet",
        "--field",
        "text",
        "--out",
        "cache/pq",
        "--max-length",
        "8",
        "-q",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "inputs 6 = baked 4 + rejected 2" in result.stdout
    result = _run(
        "bake",
        "corpus",
        "--modality",
        "text",
        "--field",
        "text",
        "--out",
        "cache/t",
        "--max-length",
        "12",
        "--vocab-size",
        "5000",
        "--shard-size",
        "4",
        "-q",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    records, reasons = _expected()
    total = len(records) + sum(reasons.values())
    assert f"inputs {total} = baked {len(records)} + rejected" in result.stdout
    inspect = _run("inspect", "cache/t", cwd=tmp_path)
    assert inspect.returncode == 0, inspect.stderr
    assert "vocabulary (word_hash, 5000 ids)" in inspect.stdout
    assert "token lengths: mean" in inspect.stdout
    info = json.loads(_run("inspect", "cache/t", "--json", cwd=tmp_path).stdout)
    assert info["vocabulary"]["total_sequences"] == len(records)
    assert info["tokenizer"]["hash"] == "fnv1a-32"
    preview = _run("preview", "cache/t", "-o", "t.png", cwd=tmp_path)
    assert preview.returncode == 0, preview.stderr
    assert (tmp_path / "t.png").stat().st_size > 1000
    wrong = _run("bake", "corpus/lines.txt", "--out", "x", "--sample-rate", "8000", cwd=tmp_path)
    assert wrong.returncode == 2
    assert "mix modalities" in wrong.stderr
