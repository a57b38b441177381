"""Tests of the text readers: formats, decoding policy, rejections and range planning."""

from __future__ import annotations

import codecs
import doctest
import itertools
import json
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datakiln.errors import SpecError
from datakiln.readers import rejections as rejections_module
from datakiln.readers import text as rt
from datakiln.readers.rejections import EMPTY_SAMPLE, Rejection


def _write(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _read(url: str, *, fmt=None, encoding="utf-8", target_bytes=rt.DEFAULT_TARGET_BYTES, **kwargs):
    """Every sample of one file, read as a bake reads it: planned into ranges, range by range."""
    fmt = rt.infer_text_format(url) if fmt is None else fmt
    fs, path = fsspec.core.url_to_fs(url)
    size = fs.size(path)
    if encoding == "auto":
        encoding = rt.detect_text_encoding(url, fmt=fmt, field=kwargs.get("field"), size=size)
    one_per_file = kwargs.get("one_per_file", False)
    ranges = rt.plan_text_ranges(
        url, size, target_bytes, fmt=fmt, one_per_file=one_per_file, encoding=encoding
    )
    records, rejections = [], []
    for start, end in ranges:
        got, rejected = rt.read_text_range(url, start, end, fmt=fmt, encoding=encoding, **kwargs)
        records += got
        rejections += rejected
    return records, rejections


def _reasons(rejections: list[Rejection]) -> list[tuple[str, str, int | None]]:
    return [(r.stage, r.error_type, r.position) for r in rejections]


def test_txt_lines_bom_crlf_empty_lines_and_positions(tmp_path):
    data = codecs.BOM_UTF8 + b"first line\r\nsecond\n\n   \r\nlast without newline"
    url = _write(tmp_path, "a.txt", data)
    records, rejections = _read(url)
    assert [r.text for r in records] == ["first line", "second", "last without newline"]
    assert all(r.uri == url for r in records)
    for r in records:  # a position is the byte offset of the sample in the file
        assert data[r.position :].startswith(r.text.encode())
    assert _reasons(rejections) == [
        ("validate", EMPTY_SAMPLE, 22),
        ("validate", EMPTY_SAMPLE, 23),
    ]


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_classic_mac_line_endings_split_at_cr(tmp_path, encoding):
    """A file whose lines end in a lone CR (no LF anywhere) gives one sample per line, with
    blank ones rejected as empty; the planned line count bounds what is read."""
    text = "caf\u00e9 au lait\rna\u00efve\r\r  \rlast"
    url = _write(tmp_path, "mac.txt", text.encode(encoding))
    records, rejections = _read(url, encoding=encoding)
    assert [r.text for r in records] == ["caf\u00e9 au lait", "na\u00efve", "last"]
    assert [r[:2] for r in _reasons(rejections)] == [("validate", EMPTY_SAMPLE)] * 2
    if encoding == "latin-1":  # positions are byte offsets
        data = text.encode(encoding)
        assert all(data[r.position :].startswith(r.text.encode(encoding)) for r in records)
    size = len(text.encode(encoding))
    [(start, end, lines)] = rt.split_line_range(url, 0, size, 2, encoding=encoding)
    assert (start, end) == (0, size)
    assert lines >= len(records) + len(rejections)


def test_classic_mac_csv_and_a_lone_cr_inside_lf_lines(tmp_path):
    url = _write(tmp_path, "mac.csv", b"id,text\r1,one\r2,two\r")
    records, rejections = _read(url, field="text")
    assert ([r.text for r in records], rejections) == (["one", "two"], [])
    # where lines end in LF, a lone CR is part of its line (only CRLF is normalised)
    url = _write(tmp_path, "mixed.txt", b"a\rb\nc\r\n")
    records, _ = _read(url)
    assert [r.text for r in records] == ["a\rb", "c"]


def test_invalid_utf8_is_rejected_or_replaced(tmp_path):
    url = _write(tmp_path, "bad.txt", b"good\nbad \xff\xfe byte\nalso good\n")
    records, rejections = _read(url)
    assert [r.text for r in records] == ["good", "also good"]
    assert _reasons(rejections) == [("decode", "UnicodeDecodeError", 5)]
    assert "byte offset 9" in rejections[0].message
    records, rejections = _read(url, errors="replace")
    assert [r.text for r in records] == ["good", "bad \ufffd\ufffd byte", "also good"]
    assert rejections == []


def test_binary_file_posing_as_text_is_one_rejection(tmp_path):
    blob = bytes(range(256)) * 64
    url = _write(tmp_path, "image.txt", b"\x89PNG\r\n\x1a\n" + blob)
    records, rejections = _read(url)
    assert records == []
    assert _reasons(rejections) == [("decode", "BinaryContent", 0)]
    # A stray NUL later in a text file rejects only its line.
    url = _write(tmp_path, "mostly.txt", b"x\n" * 5000 + b"a\x00b\nlast\n")
    records, rejections = _read(url)
    assert len(records) == 5001
    assert _reasons(rejections) == [("decode", "BinaryContent", 10000)]


def test_other_encodings(tmp_path):
    url = _write(tmp_path, "latin.txt", "café\r\nnaïve\n".encode("latin-1"))
    records, _ = _read(url, encoding="latin-1")
    assert [r.text for r in records] == ["café", "naïve"]
    # UTF-16 is read whole; positions are line numbers.
    url = _write(tmp_path, "wide.jsonl", '{"t": "日本"}\r\n\n{"t": "x"}\n'.encode("utf-16"))
    records, rejections = _read(url, encoding="utf-16", field="t", target_bytes=4)
    assert [(r.text, r.position) for r in records] == [("日本", 0), ("x", 2)]
    assert _reasons(rejections) == [("validate", EMPTY_SAMPLE, 1)]
    with pytest.raises(SpecError, match="unknown text encoding"):
        _read(url, encoding="no-such-codec", field="t")


def test_one_sample_per_file(tmp_path):
    url = _write(tmp_path, "doc.txt", codecs.BOM_UTF8 + b"Title\r\n\r\nBody text.\r\n")
    records, rejections = _read(url, one_per_file=True)
    assert [(r.text, r.position) for r in records] == [("Title\n\nBody text.\n", 0)]
    assert rejections == []
    url = _write(tmp_path, "blank.txt", b" \n\t\n")
    records, rejections = _read(url, one_per_file=True)
    assert records == []
    assert _reasons(rejections) == [("validate", EMPTY_SAMPLE, 0)]
    url = _write(tmp_path, "broken.txt", b"abc \xc3")
    records, rejections = _read(url, one_per_file=True)
    assert records == []
    assert _reasons(rejections) == [("decode", "UnicodeDecodeError", 0)]


def test_empty_file_is_reported(tmp_path):
    for fmt, name in [("txt", "e.txt"), ("jsonl", "e.jsonl"), ("csv", "e.csv")]:
        url = _write(tmp_path, name, b"")
        field = None if fmt == "txt" else "text"
        assert rt.plan_text_ranges(url, 0, 100) == [(0, 0)]
        records, rejections = _read(url, field=field)
        assert records == [], fmt
        assert _reasons(rejections) == [("validate", EMPTY_SAMPLE, 0)], fmt


def test_jsonl_field_and_bad_lines(tmp_path):
    lines = [
        json.dumps({"text": "one\r\ntwo", "id": 1}),
        "{not json",
        json.dumps({"other": "x"}),
        json.dumps(["text"]),
        json.dumps({"text": None}),
        json.dumps({"text": 42}),
        json.dumps({"text": "  "}),
        "",
        json.dumps({"text": "ünïcode ✓"}),
    ]
    url = _write(tmp_path, "d.jsonl", "\n".join(lines).encode() + b"\n")
    records, rejections = _read(url, field="text")
    assert [r.text for r in records] == ["one\ntwo", "ünïcode ✓"]
    assert [(r.stage, r.error_type) for r in rejections] == [
        ("parse", "JSONDecodeError"),
        ("parse", "MissingField"),
        ("parse", "MissingField"),
        ("validate", EMPTY_SAMPLE),
        ("validate", "NotText"),
        ("validate", EMPTY_SAMPLE),
        ("validate", EMPTY_SAMPLE),
    ]
    # records + rejections account for every line
    assert len(records) + len(rejections) == len(lines)


def test_csv_and_tsv_columns(tmp_path):
    data = (
        codecs.BOM_UTF8 + b'id,text,label\r\n1,"hello, world",a\r\n2,"multi\nline",b\r\n'
        b"3,plain,c\r\n4\r\n5,,e\r\n"
    )
    url = _write(tmp_path, "d.csv", data)
    records, rejections = _read(url, field="text")
    assert [r.text for r in records] == ["hello, world", "multi\nline", "plain"]
    assert [data[r.position : r.position + 2] for r in records] == [b"1,", b"2,", b"3,"]
    assert [(r.stage, r.error_type) for r in rejections] == [
        ("parse", "MalformedRow"),
        ("validate", EMPTY_SAMPLE),
    ]
    records, rejections = _read(url, field="nope")
    assert records == []
    assert [r.error_type for r in rejections] == ["MissingField"]
    url = _write(tmp_path, "d.tsv", b"text\tn\nfirst, with comma\t1\nsecond\t2\n")
    records, _ = _read(url, field="text")
    assert [r.text for r in records] == ["first, with comma", "second"]


def test_csv_ranges_after_the_first_read_the_header(tmp_path):
    rows = [f'{i},"row {i}, quoted"' for i in range(200)]
    url = _write(tmp_path, "big.csv", ("n,text\n" + "\n".join(rows) + "\n").encode())
    whole, _ = _read(url, field="text", target_bytes=10**9)
    split, rejections = _read(url, field="text", target_bytes=300)
    assert rejections == []
    assert (
        [r.text for r in split]
        == [r.text for r in whole]
        == [f"row {i}, quoted" for i in range(200)]
    )
    assert [r.position for r in split] == [r.position for r in whole]


def test_parquet_column_row_groups_nulls_and_binary(tmp_path):
    table = pa.table(
        {
            "text": ["a", None, "b c", "", "d", "e", "f"],
            "raw": [b"x", b"\xff", b"y", b"z", b"w", b"v", b"u"],
            "n": list(range(7)),
        }
    )
    path = tmp_path / "d.parquet"
    pq.write_table(table, path, row_group_size=2)
    url = str(path)
    ranges = rt.plan_text_ranges(url, path.stat().st_size, 1)
    assert ranges == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert rt.plan_text_ranges(url, path.stat().st_size, 10**9) == [(0, 4)]
    records, rejections = _read(url, field="text", target_bytes=1)
    assert [(r.text, r.position) for r in records] == [
        ("a", 0),
        ("b c", 2),
        ("d", 4),
        ("e", 5),
        ("f", 6),
    ]
    assert _reasons(rejections) == [("validate", EMPTY_SAMPLE, 1), ("validate", EMPTY_SAMPLE, 3)]
    records, rejections = _read(url, field="raw")
    assert [r.text for r in records] == ["x", "y", "z", "w", "v", "u"]
    assert _reasons(rejections) == [("decode", "UnicodeDecodeError", 1)]
    records, rejections = _read(url, field="n")
    assert records == []
    assert {r.error_type for r in rejections} == {"NotText"}
    records, rejections = _read(url, field="missing")
    assert records == []
    assert [r.error_type for r in rejections] == ["MissingField"]
    bad = _write(tmp_path, "bad.parquet", b"PAR1 this is not parquet PAR1")
    records, rejections = rt.read_text_range(bad, 0, 1, fmt="parquet", field="text")
    assert records == []
    assert [r.stage for r in rejections] == ["decode"]


@pytest.mark.parametrize("target_bytes", [1, 7, 64, 1000, 10**9])
def test_ranges_start_at_line_starts_and_cover_the_file(tmp_path, target_bytes):
    lines = [("word " * (i % 37)).strip() or "x" for i in range(300)]
    lines[10] = "y" * 2500  # a line longer than several ranges
    data = "\n".join(lines).encode() + b"\n"
    url = _write(tmp_path, "lines.txt", data)
    ranges = rt.plan_text_ranges(url, len(data), target_bytes)
    assert ranges[0][0] == 0
    assert ranges[-1][1] == len(data)
    for (s0, e0), (s1, _) in itertools.pairwise(ranges):
        assert e0 == s1
        assert s0 < e0
        assert data[s1 - 1 : s1] == b"\n"
    if target_bytes < len(data):
        longest_line = max(map(len, lines)) + 1
        assert max(e - s for s, e in ranges) <= target_bytes + longest_line
    got = []
    for start, end in ranges:
        records, rejections = rt.read_text_range(url, start, end, fmt="txt")
        assert rejections == []
        got.extend(records)
    assert [r.text for r in got] == lines
    assert len({r.position for r in got}) == len(lines)


def test_fsspec_urls_and_fetch_errors(tmp_path):
    fs = fsspec.filesystem("memory")
    path = f"/datakiln-test-{uuid.uuid4().hex}/d.jsonl"
    fs.pipe(path, b'{"t": "in memory"}\n')
    try:
        records, _ = _read(f"memory://{path}", field="t")
        assert [r.text for r in records] == ["in memory"]
    finally:
        fs.rm(path)
    missing = str(tmp_path / "missing.txt")
    records, rejections = rt.read_text_range(missing, 0, 10, fmt="txt")
    assert records == []
    assert _reasons(rejections) == [("fetch", "FileNotFoundError", 0)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fmt": "xml"}, "unknown text format"),
        ({"fmt": "jsonl"}, "needs field"),
        ({"fmt": "txt", "field": "t"}, "not used"),
        ({"fmt": "csv", "field": "t", "one_per_file": True}, "one_per_file"),
        ({"fmt": "txt", "errors": "ignore"}, "errors must be"),
    ],
)
def test_bad_arguments_raise_spec_error(tmp_path, kwargs, match):
    url = _write(tmp_path, "a.txt", b"a\n")
    with pytest.raises(SpecError, match=match):
        rt.read_text_range(url, 0, 2, **kwargs)


def test_infer_format():
    assert rt.infer_text_format("s3://b/x/part-1.JSONL") == "jsonl"
    assert rt.infer_text_format("a.tsv") == "tsv"
    with pytest.raises(SpecError, match="fmt="):
        rt.infer_text_format("a.bin")


def test_rejection_round_trips():
    rejection = Rejection("file:///a.txt", "decode", "UnicodeDecodeError", "bad", 3)
    assert Rejection.from_dict(json.loads(json.dumps(rejection.to_dict()))) == rejection
    err = Rejection.from_error("u", "fetch", FileNotFoundError("gone"))
    assert (err.error_type, err.message, err.position) == ("FileNotFoundError", "gone", None)


def test_redact_url_doctests():
    result = doctest.testmod(rejections_module, raise_on_error=False)
    assert result.attempted > 0
    assert result.failed == 0


def test_utf8_lines_read_at_once_keep_byte_positions(tmp_path):
    # multi-byte characters before later lines: positions stay byte offsets, not characters
    data = "héllo wörld\r\n日本語 テキスト\n\u3000\n🙂 emoji line\n".encode()
    url = _write(tmp_path, "u.txt", data)
    records, rejections = _read(url)
    assert [r.text for r in records] == ["héllo wörld", "日本語 テキスト", "🙂 emoji line"]
    for r in records:
        assert data[r.position :].startswith(r.text.encode())
    assert [r[:2] for r in _reasons(rejections)] == [("validate", EMPTY_SAMPLE)]


# -- encoding="auto" ---------------------------------------------------------------------------

LATIN = ["Le château est très beau à la fin de l'été.", "El niño comió una manzana en el jardín."]
JAPANESE = ["東京は日本の首都です。", "カタカナとひらがなと漢字を使って書きます。"]


@pytest.mark.parametrize(("lines", "codec"), [(LATIN, "latin-1"), (JAPANESE, "shift_jis")])
def test_auto_encoding_reads_legacy_txt_csv_and_jsonl(tmp_path, lines, codec):
    txt = _write(tmp_path, "a.txt", ("\n".join(lines) + "\n").encode(codec))
    assert [r.text for r in _read(txt)[0]] == []  # utf-8 loses every non-ASCII line
    records, rejections = _read(txt, encoding="auto", target_bytes=16)  # several ranges
    assert [r.text for r in records] == lines
    assert rejections == []
    rows = "".join(f'{i},"{line}"\r\n' for i, line in enumerate(lines))
    csv_url = _write(tmp_path, "a.csv", f"id,text\r\n{rows}".encode(codec))
    records, rejections = _read(csv_url, encoding="auto", field="text")
    assert [r.text for r in records] == lines
    jsonl = "".join(json.dumps({"t": line}, ensure_ascii=False) + "\n" for line in lines)
    url = _write(tmp_path, "a.jsonl", jsonl.encode(codec))
    records, rejections = _read(url, encoding="auto", field="t")
    assert [r.text for r in records] == lines
    assert rt.detect_text_encoding(url) == rt.detect_text_encoding(txt) != "utf-8"


def test_auto_encoding_of_parquet_columns(tmp_path):
    values = [line.encode("latin-1") for line in LATIN]
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"raw": values, "text": LATIN}), path, row_group_size=1)
    url = str(path)
    assert rt.detect_text_encoding(url, field="text") == "utf-8"  # strings are UTF-8
    detected = rt.detect_text_encoding(url, field="raw")
    assert [v.decode(detected) for v in values] == LATIN
    records, rejections = _read(url, field="raw", encoding="auto")
    assert [r.text for r in records] == LATIN
    assert rejections == []
    assert rt.detect_text_encoding(url, field="missing") == "utf-8"
    bad = _write(tmp_path, "bad.parquet", b"PAR1 this is not parquet PAR1")
    assert rt.detect_text_encoding(bad, field="raw") == "utf-8"


def test_auto_encoding_of_utf16_with_a_mark_reads_it_whole(tmp_path):
    url = _write(tmp_path, "wide.txt", "\n".join(JAPANESE + LATIN).encode("utf-16"))
    assert rt.detect_text_encoding(url) == "utf-16"
    records, rejections = _read(url, encoding="auto", target_bytes=8)
    assert [r.text for r in records] == JAPANESE + LATIN
    assert rejections == []


def test_range_readers_need_the_detected_codec(tmp_path):
    url = _write(tmp_path, "a.txt", b"a\n")
    with pytest.raises(SpecError, match="detect_file_encoding"):
        rt.read_text_range(url, 0, 2, fmt="txt", encoding="auto")
    with pytest.raises(SpecError, match="once per file"):
        rt.plan_text_ranges(url, 2, 1, encoding="auto")


@pytest.mark.parametrize("codec", ["cp1252", "cp932", "gb18030", "euc_kr", "big5"])
def test_legacy_ranges_read_at_once_equal_line_by_line(tmp_path, codec, monkeypatch):
    samples = {
        "cp1252": ["café crème", "naïve — “quoted”", "€ 20"],
        "cp932": ["東京は日本の首都です。", "カタカナ\\パス", "ｶﾀｶﾅ半角"],
        "gb18030": ["中文文本测试", "你好，世界", "𠀀 beyond the BMP"],
        "euc_kr": ["안녕하세요 세계", "한국어 문장입니다"],
        "big5": ["繁體中文測試", "你好世界"],
    }[codec]
    lines = [*samples, "", "plain ascii", *samples]
    data = b"\r\n".join(line.encode(codec) for line in lines) + b"\n"
    url = _write(tmp_path, "a.txt", data)
    at_once = _read(url, encoding=codec, target_bytes=24)
    monkeypatch.setattr(rt, "_STATEFUL_CODECS", (codec,))  # forces the line-by-line path
    one_by_one = _read(url, encoding=codec, target_bytes=24)
    assert at_once == one_by_one
    records, rejections = at_once
    assert [r.text for r in records] == [line for line in lines if line]
    for r in records:
        assert data[r.position :].startswith(r.text.encode(codec))
    assert _reasons(rejections) == [("validate", EMPTY_SAMPLE, data.index(b"\r\n\r\n") + 2)]


def test_a_legacy_range_with_a_bad_line_rejects_that_line_alone(tmp_path):
    data = "東京\n".encode("cp932") + b"bad \x81\nok\n"  # a lead byte without its trail byte
    url = _write(tmp_path, "a.txt", data)
    records, rejections = _read(url, encoding="cp932")
    assert [r.text for r in records] == ["東京", "ok"]
    assert _reasons(rejections) == [("decode", "UnicodeDecodeError", len("東京\n".encode("cp932")))]


def test_blank_rejections_are_empty_inputs_not_empty_fields():
    assert Rejection("u", "validate", EMPTY_SAMPLE, "empty line", 3).blank
    assert not Rejection("u", "decode", "UnicodeDecodeError", "bad", 3).blank
    # a record with one empty field held something in its other fields: it is broken
    assert not Rejection(
        "u", "validate", EMPTY_SAMPLE, "empty text", record="row 1", field="c"
    ).blank
