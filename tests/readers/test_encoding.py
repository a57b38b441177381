"""Tests of codec detection for ``encoding="auto"``: marks, UTF-8, legacy codecs, sampling."""

from __future__ import annotations

import codecs

import charset_normalizer
import fsspec
import pytest

from datakiln.readers import encoding as enc

# Real prose, so that the detector has language to go on, as it would in a real file.
FRENCH = [
    "Le château est très beau à la fin de l'été.",
    "Où est la bibliothèque ? Près de l'église, derrière le marché.",
    "Les élèves étudient le français et l'histoire de la région.",
    "Il a reçu une lettre de sa cousine, qui habite à Genève.",
]
# cp1252's own characters beyond Latin-1 (0x80-0x9F): œ, curly quotes, dashes, the euro sign
WINDOWS = ["Sa sœur a payé 20 € pour « ça » — “vraiment” ?"]
SPANISH = [
    "El niño comió una manzana en el jardín.",
    "Mañana iremos a la montaña con mi compañero.",
    "¿Dónde está la estación de autobuses?",
]
JAPANESE = [
    "東京は日本の首都です。",
    "今日はいい天気ですね。散歩に行きましょう。",
    "カタカナとひらがなと漢字を使って書きます。",
    "この本はとても面白かったです。",
]


def _lines(lines: list[str], codec: str) -> bytes:
    return ("\n".join(lines) + "\n").encode(codec)


@pytest.mark.parametrize(
    ("lines", "codec"),
    [
        (FRENCH, "latin-1"),
        (SPANISH, "latin-1"),
        (FRENCH + ["plain ascii line"] * 50, "latin-1"),
        (JAPANESE, "shift_jis"),
        (JAPANESE + ["plain ascii line"] * 50, "shift_jis"),
        (FRENCH + WINDOWS, "cp1252"),
    ],
)
def test_legacy_codecs_decode_to_the_original_text(lines, codec):
    data = _lines(lines, codec)
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")  # what a utf-8 bake would reject
    name = enc.detect_encoding([data])
    assert name == codecs.lookup(name).name  # a canonical Python codec name
    assert name != "utf-8"
    assert data.decode(name) == data.decode(codec)


def test_latin1_prose_is_read_as_cp1252_which_decodes_it_alike():
    """Latin-1 and cp1252 agree on 0xA0-0xFF; the detector's ties go to cp1252."""
    assert enc.detect_encoding([_lines(FRENCH, "latin-1")]) == "cp1252"


def test_shift_jis_is_read_as_cp932():
    assert enc.detect_encoding([_lines(JAPANESE, "shift_jis")]) == "cp932"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (codecs.BOM_UTF8 + "é".encode(), "utf-8"),
        ("\ufeffhé\nyo\n".encode("utf-16-le"), "utf-16"),
        ("\ufeffhé\nyo\n".encode("utf-16-be"), "utf-16"),
        ("\ufeffhé\n".encode("utf-32-le"), "utf-32"),
        ("\ufeffhé\n".encode("utf-32-be"), "utf-32"),
        (b"plain ascii\n", "utf-8"),
        (_lines(FRENCH + JAPANESE, "utf-8"), "utf-8"),
        ("日本語".encode()[:-1], "utf-8"),  # a character cut by the sample's end
        (b"", "utf-8"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x01", "utf-8"),  # binary: the reader rejects it
    ],
)
def test_marks_utf8_and_binary(data, expected):
    assert enc.detect_encoding([data]) == expected


def test_utf16_marks_decode_to_the_original_text():
    text = "\n".join(FRENCH + JAPANESE) + "\n"
    for codec in ("utf-16", "utf-32"):
        data = text.encode(codec)  # Python writes the mark
        name = enc.detect_encoding([data])
        assert data.decode(name) == text


def test_a_later_piece_that_is_not_utf8_decides():
    head = _lines(["plain ascii"] * 10, "ascii")
    later = _lines(FRENCH, "latin-1")
    assert enc.detect_encoding([head]) == "utf-8"
    assert later.decode(enc.detect_encoding([head, later])) == later.decode("latin-1")


def test_sample_is_bounded_spread_over_the_file_and_cut_to_whole_lines(tmp_path):
    """A file whose head is plain ASCII and whose accents come late is still detected."""
    ascii_line = b"just an ordinary line of plain ascii text number %07d\n"
    accented = _lines(FRENCH, "latin-1")
    chunks = [ascii_line % i for i in range(60_000)]  # ~3.2 MiB of ASCII first
    chunks += [accented] * 12_000  # ~2.6 MiB of Latin-1 prose after it
    data = b"".join(chunks)
    path = tmp_path / "late.txt"
    path.write_bytes(data)
    assert len(data) > enc.SAMPLE_PIECES * enc.SAMPLE_PIECE_BYTES
    fs = fsspec.filesystem("file")
    pieces = enc.sample_file(fs, str(path), len(data))
    assert 1 < len(pieces) <= enc.SAMPLE_PIECES
    assert sum(map(len, pieces)) <= enc.SAMPLE_PIECES * enc.SAMPLE_PIECE_BYTES
    assert pieces[0].isascii()
    for piece in pieces:
        assert piece.endswith(b"\n")
        at = data.find(piece)
        assert at == 0 or data[at - 1 : at] == b"\n"  # each piece starts at a line start
    name = enc.detect_file_encoding(str(path))
    assert name == enc.detect_file_encoding(str(path), len(data))  # deterministic
    assert accented.decode(name) == accented.decode("latin-1")


def test_small_files_are_read_whole(tmp_path):
    data = _lines(JAPANESE, "shift_jis")
    path = tmp_path / "ja.txt"
    path.write_bytes(data)
    assert enc.sample_file(fsspec.filesystem("file"), str(path), len(data)) == [data]
    assert enc.detect_file_encoding(f"file://{path}") == "cp932"


def test_binary_values_are_detected_as_one_piece():
    values = [line.encode("latin-1") for line in SPANISH * 3]
    name = enc.detect_values_encoding(values)
    assert [v.decode(name) for v in values] == SPANISH * 3
    assert enc.detect_values_encoding([]) == "utf-8"


def test_detector_identity_names_the_installed_version():
    identity = enc.detector_identity()
    assert identity["name"] == "charset-normalizer"
    assert identity["version"] == charset_normalizer.__version__
    assert identity["sample_pieces"] * identity["sample_piece_bytes"] == 4 * 2**20


def test_detection_reads_byte_ranges_through_fsspec(memory_root):
    """Any fsspec URL: the pieces are ranged reads, as on an object store."""
    filler = b"plain ascii filler line for the head of the file\n" * 70_000  # ~3.3 MiB
    data = filler + _lines(SPANISH, "latin-1") * 10_000  # ~1.2 MiB: only the last piece sees it
    assert len(data) > enc.SAMPLE_PIECES * enc.SAMPLE_PIECE_BYTES
    url = f"{memory_root}/late.txt"
    with fsspec.open(url, "wb") as f:
        f.write(data)
    name = enc.detect_file_encoding(url)
    assert _lines(SPANISH, "latin-1").decode(name) == "\n".join(SPANISH) + "\n"


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-32-le"])
def test_utf16_and_utf32_without_a_mark_are_found_by_their_nul_bytes(codec):
    text = "\n".join(FRENCH + JAPANESE) + "\n"
    data = text.encode(codec)  # no byte-order mark
    name = enc.detect_encoding([data])
    assert name.startswith(("utf-16", "utf-32"))
    assert data.decode(name) == text
