"""The ``datakiln`` command: argument parsing, logging, exit codes; the logic is in the API.

Exit codes: 0 done, 1 the bake failed (or ``--max-rejected`` was exceeded), 2 bad usage or
bad input (malformed spec, missing source, unwritable output, missing cache).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from datakiln.errors import BakeError, DatakilnError

logger = logging.getLogger("datakiln")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

BAKE_EXAMPLES = """examples:
  datakiln bake 'photos/**/*.jpg' --out cache/photos64 --size 64 --representation rgb
  datakiln bake photos/ --out s3://bucket/cache --labels parent --fit center-crop
  datakiln bake 'corpus/*.jsonl' --modality text --field text --out cache/t --max-length 128
  datakiln bake 'clips/**/*.wav' --modality audio --out cache/a --sample-rate 16000 \\
      --duration 2.0 --n-mels 80
  datakiln bake spec.toml
"""


def _setup_logging(verbosity: int) -> None:
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logger.setLevel(level)
    # Dask's distributed logs every worker start and stop at INFO (and, at INFO too, a
    # traceback when a connection closes under a send during shutdown); keep them for -v.
    # distributed sets its loggers' levels from dask's config when it is imported, which
    # happens later, inside a bake: so the levels go into that config as well.
    import dask

    chatty = logging.DEBUG if verbosity > 0 else logging.WARNING
    for name in ("distributed", "bokeh", "tornado"):
        logging.getLogger(name).setLevel(chatty)
    dask.config.set({"logging.distributed": logging.getLevelName(chatty).lower()})


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-v",
        "--verbose",
        action="store_const",
        const=1,
        dest="verbosity",
        help="log every shard and file (DEBUG)",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_const",
        const=-1,
        dest="verbosity",
        help="only warnings and the summary",
    )
    parser.set_defaults(verbosity=0)


def _image_codec(text: str) -> dict[str, Any]:
    """``--image-codec jpeg:85`` as the image table's ``codec`` and ``quality``."""
    from datakiln.errors import SpecError

    name, _, quality = text.partition(":")
    if not quality:
        return {"codec": name}
    if name != "jpeg" or not quality.isdigit():
        raise SpecError(
            f"--image-codec takes a codec name, or jpeg:QUALITY with QUALITY in 1..100; "
            f"got {text!r}"
        )
    return {"codec": name, "quality": int(quality)}


# Flags of each modality's parameter table: flag dest -> field name of the table.
IMAGE_FLAGS = {
    name: name for name in ("height", "width", "representation", "fit", "labels", "max_pixels")
}
TEXT_FLAGS = {
    "format": "format",
    "field": "field",
    "one_per_file": "one_per_file",
    "encoding": "encoding",
    "errors": "errors",
    "tokenizer": "tokenizer",
    "vocab_size": "vocab_size",
    "max_length": "max_length",
    "case_sensitive": "case_sensitive",
    "target_bytes": "target_bytes",
}
AUDIO_FLAGS = {
    "sample_rate": "sample_rate",
    "duration": "duration",
    "n_mels": "n_mels",
    "hop_length": "hop_length",
    "n_fft": "n_fft",
    "fmin": "fmin",
    "fmax": "fmax",
    "mel_dtype": "mel_dtype",
    "wave_dtype": "wave_dtype",
    "align": "align",
}


def _bake_arguments(parser: argparse.ArgumentParser) -> None:
    from datakiln.etl.spec import (
        ALIGNS,
        FITS,
        MEL_DTYPES,
        REPRESENTATIONS,
        TEXT_ERRORS,
        TOKENIZERS,
        WAVE_DTYPES,
    )
    from datakiln.readers.text import TEXT_FORMATS as LINE_TEXT_FORMATS

    parser.add_argument("sources", nargs="+", metavar="SOURCE|SPEC.toml")
    parser.add_argument("--out", "-o", help="output cache URL or path")
    parser.add_argument(
        "--modality",
        choices=("image", "text", "audio"),
        help="what the sources are (default: from their file endings or the flags given, "
        "else image)",
    )
    parser.add_argument(
        "--fields",
        action="append",
        metavar="NAME=MODALITY[:COLUMN],...",
        help="bake records: each row holds these fields, read from tables (csv, tsv, jsonl, "
        "parquet), tar shards or zip archives; e.g. images=image:jpg,captions=text:txt (or "
        "one --fields per field). The image, text and audio flags set every field of their "
        "modality",
    )
    parser.add_argument(
        "--source-format", help="records: the source of every input (table, tar, zip, ...)"
    )
    parser.add_argument(
        "--no-normalize",
        action="store_true",
        help="images: read in [-1, 1] instead of [0, 1]; audio: no peak normalisation",
    )
    parser.add_argument(
        "--shard-size",
        type=int,
        help="samples per bake shard (default: 1024 images or clips, 16384 text lines)",
    )
    image = parser.add_argument_group("images")
    image.add_argument("--size", type=int, help="height and width of the stored images")
    image.add_argument("--height", type=int)
    image.add_argument("--width", type=int)
    image.add_argument("--representation", choices=REPRESENTATIONS)
    image.add_argument("--fit", choices=FITS)
    image.add_argument("--labels", choices=("parent",), help="label by parent folder name")
    image.add_argument("--max-pixels", type=int, help="reject images declaring more pixels")
    image.add_argument(
        "--image-codec",
        metavar="CODEC[:QUALITY]",
        help="how stored images are compressed: auto (default: none under 128x128 RGB, else "
        "jpeg), none, zstd, blosc-lz4, png, or jpeg[:QUALITY] (default quality 90), e.g. "
        "--image-codec jpeg:85",
    )
    text = parser.add_argument_group("text")
    text.add_argument(
        "--format",
        choices=LINE_TEXT_FORMATS,
        help="how to read the files (default: from each file's ending)",
    )
    text.add_argument("--field", help="the JSON key or CSV/Parquet column holding the text")
    text.add_argument(
        "--one-per-file", action="store_true", default=None, help=".txt: a file is one sample"
    )
    text.add_argument(
        "--encoding",
        help="text codec of the files (default utf-8), or 'auto' to detect each file's",
    )
    text.add_argument(
        "--errors",
        choices=TEXT_ERRORS,
        help="undecodable bytes: reject the sample (default) or replace them with U+FFFD",
    )
    text.add_argument("--tokenizer", choices=TOKENIZERS, help="default word_hash")
    text.add_argument("--vocab-size", type=int, help="token ids (default 10000)")
    text.add_argument("--max-length", type=int, help="tokens per sample (default 512)")
    text.add_argument("--case-sensitive", action="store_true", default=None)
    text.add_argument(
        "--target-bytes", type=int, help="bytes per range of a large file (default 64 MiB)"
    )
    audio = parser.add_argument_group("audio")
    audio.add_argument("--sample-rate", type=int, help="Hz (default 16000)")
    audio.add_argument("--duration", type=float, help="seconds per clip (default 1.0)")
    audio.add_argument("--n-mels", type=int, help="mel bands (default 80)")
    audio.add_argument("--hop-length", type=int, help="samples between frames (default 512)")
    audio.add_argument("--n-fft", type=int, help="FFT window (default 1024)")
    audio.add_argument("--fmin", type=float, help="lowest mel frequency in Hz (default 0)")
    audio.add_argument("--fmax", type=float, help="highest mel frequency (default Nyquist)")
    audio.add_argument("--mel-dtype", choices=MEL_DTYPES, help="default float16")
    audio.add_argument(
        "--wave-dtype",
        choices=WAVE_DTYPES,
        help="stored waveform: int16 PCM (default), float16 or float32",
    )
    audio.add_argument("--align", choices=ALIGNS, help="what pad/trim keeps (default start)")
    parser.add_argument(
        "--scheduler",
        help="auto (default: a worker process per CPU) | threads | processes | synchronous | "
        "tcp://HOST:PORT",
    )
    parser.add_argument(
        "--workers", type=int, help="start a LocalCluster of N worker processes and bake on it"
    )
    parser.add_argument(
        "--max-rejected", type=int, help="exit 1 without committing when more inputs are rejected"
    )
    parser.add_argument(
        "--transform",
        action="append",
        metavar="MODULE:FUNCTION",
        help="a JAX function over each shard's batch returning new fields (repeat to chain)",
    )
    parser.add_argument(
        "--filter",
        action="append",
        metavar="MODULE:FUNCTION|CHECK=VALUE",
        help="keep rows the JAX function returns true for, or that pass min_side=32, "
        "max_aspect=3, min_chars=..., max_chars=..., min_duration=..., max_duration=...",
    )
    parser.add_argument("--dedup", choices=("exact", "near"), help="reject copies of earlier rows")
    parser.add_argument(
        "--dedup-distance", type=int, help="near dedup: differing pHash bits of 64 (default 4)"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="say what the bake would do (like `datakiln plan`) and stop",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another bake of the same store to finish",
    )
    parser.add_argument(
        "--force-unlock",
        action="store_true",
        help="take over the store's lease even if another bake holds it (warns, naming it)",
    )


def _json_flag(parser: argparse.ArgumentParser, what: str) -> None:
    """``--json``: print the Python function's result instead of the table (one code path)."""
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=1, sort_keys=True))


def _command(sub: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand whose epilog (its example) keeps its line breaks, with -v/-q."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs
    )
    _common(parser)
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="datakiln",
        description="Bake raw media into chunked, checksummed Zarr v3 caches for JAX training.",
        epilog="run `datakiln COMMAND --help` for each command's options and an example",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    bake = _command(
        sub,
        "bake",
        help="bake inputs into a cache",
        epilog=BAKE_EXAMPLES,
        description="Bake images, text or audio from SOURCES (paths, globs or fsspec URLs), "
        "or a SPEC.toml. The modality comes from --modality, else from the sources' file "
        "endings or the modality flags given, else it is image.",
    )
    _bake_arguments(bake)
    _json_flag(bake, "the bake report (what report.json holds)")
    plan = _command(
        sub,
        "plan",
        help="say what a bake would do, without doing it",
        epilog="example:\n  datakiln plan photos/ --out cache/photos64 --size 64",
        description="Same arguments as `bake`: prints how many shards are done, which inputs "
        "are new, changed or gone, and why the cache key differs from the committed one.",
    )
    _bake_arguments(plan)
    _json_flag(plan, "the plan summary")

    demo = _command(
        sub,
        "demo",
        help="bake a generated demo corpus and read it back",
        description="Write a corpus of real image files (mixed sizes, modes and formats, "
        "three broken files) to a temporary folder, bake it, and print the summary.",
        epilog="example:\n  datakiln demo --out demo-cache",
    )
    demo.add_argument("--out", "-o", default="demo-cache", help="cache path (default demo-cache)")
    demo.add_argument("--images", type=int, default=300, help="good images to generate")
    demo.add_argument("--corpus", help="write the corpus here and keep it (default: a temp dir)")
    demo.add_argument("--corpus-only", action="store_true", help="write the corpus, do not bake")

    inspect = _command(
        sub,
        "inspect",
        help="describe a cache",
        epilog="example:\n  datakiln inspect demo-cache",
    )
    inspect.add_argument("url")
    _json_flag(inspect, "everything inspect shows")

    verify = _command(
        sub,
        "verify",
        help="recompute a cache's checksums; exit 1 on any damage",
        epilog="example:\n  datakiln verify demo-cache",
    )
    verify.add_argument("url")
    _json_flag(verify, "the objects checked and the problems found")

    preview = _command(
        sub,
        "preview",
        help="draw a picture of a cache (contact sheet, spectrograms, histogram)",
        epilog="example:\n  datakiln preview demo-cache -o preview.png",
    )
    preview.add_argument("url")
    preview.add_argument("-o", "--output", default="preview.png", help="PNG file to write")
    preview.add_argument("--count", type=int, default=36, help="samples to show")
    preview.add_argument("--seed", type=int, default=0, help="which samples to show")

    ls = _command(
        sub,
        "ls",
        help="list the caches under a prefix",
        epilog="example:\n  datakiln ls s3://bucket/caches",
    )
    ls.add_argument("prefix")
    _json_flag(ls, "the caches found")

    gc = _command(
        sub,
        "gc",
        help="remove old versions and leftovers of a cache",
        epilog="example:\n  datakiln gc demo-cache --dry-run",
        description="Delete what the committed manifest does not reference: other generations, "
        "shards retired by incremental bakes, old rejected tables, partial writes. What a version "
        "opened by a reader within --grace references is kept.",
    )
    gc.add_argument("url")
    gc.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    gc.add_argument(
        "--grace",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="keep what versions opened by readers in the last SECONDS use (default 1 hour)",
    )
    _json_flag(gc, "the paths removed (or, with --dry-run, to remove)")
    _service_commands(sub)
    return parser


def _service_commands(sub: Any) -> None:
    """``serve`` and ``watch``: the long-running commands (see datakiln.service)."""
    serve = _command(
        sub,
        "serve",
        help="run the bake service: jobs over HTTP, a web page, caches by key",
        epilog="example:\n  DATAKILN_TOKEN=... datakiln serve --root /data/caches "
        "--state-dir /var/lib/datakiln",
        description="Serve the HTTP API and page of datakiln (needs `pip install "
        "datakiln[service]`). Submitting and cancelling need the bearer token from "
        "$DATAKILN_TOKEN or --token-file.",
    )
    serve.add_argument("--root", required=True, help="URL or path the caches go under")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    serve.add_argument("--port", type=int, default=8765, help="default 8765")
    where = serve.add_mutually_exclusive_group()
    where.add_argument("--scheduler", default="auto", help="auto (default) | threads | tcp://…")
    where.add_argument("--workers", type=int, help="bake on a LocalCluster of N workers")
    serve.add_argument(
        "--state-dir", default=".datakiln-service", help="where the job database lives"
    )
    serve.add_argument("--token-file", help="file holding the token (else $DATAKILN_TOKEN)")
    serve.add_argument(
        "--allow-source",
        action="append",
        default=[],
        metavar="PREFIX",
        help="also allow sources under this URL prefix (repeatable; the root's filesystem is "
        "always allowed)",
    )
    serve.add_argument("--max-concurrent", type=int, default=2, help="bakes at once (default 2)")
    serve.add_argument(
        "--max-body-bytes", type=int, default=1 << 20, help="request size cap (default 1 MiB)"
    )
    watch = _command(
        sub,
        "watch",
        help="bake, then keep baking new input files as incremental versions",
        epilog="example:\n  datakiln watch photos/ --out cache/pets --size 64 --interval 60",
        description="Same arguments as `bake`, plus --interval: every interval the sources "
        "are listed again and new or changed files are baked into a new version.",
    )
    _bake_arguments(watch)
    watch.add_argument("--interval", type=float, default=60.0, help="seconds (default 60)")
    watch.add_argument("--rounds", type=int, help="stop after this many checks (default never)")


def _token(args: argparse.Namespace) -> str:
    from datakiln.errors import SpecError

    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as err:
            raise SpecError(f"cannot read --token-file {args.token_file!r}: {err}") from err
    else:
        token = os.environ.get("DATAKILN_TOKEN", "").strip()
    if not token:
        raise SpecError("the service needs a token: set DATAKILN_TOKEN or pass --token-file FILE")
    return token


def _cmd_serve(args: argparse.Namespace) -> int:
    from datakiln.errors import SpecError

    try:
        from datakiln.service.jobs import ServiceConfig
        from datakiln.service.server import serve
    except ImportError as err:
        raise SpecError(
            f"the service needs its extra: pip install 'datakiln[service]' ({err})"
        ) from err
    root = args.root if "://" in args.root else os.path.abspath(args.root)
    config = ServiceConfig(
        root=root,
        state_dir=os.path.abspath(args.state_dir),
        scheduler=args.scheduler,
        workers=args.workers,
        max_concurrent=args.max_concurrent,
        allow_sources=tuple(args.allow_source),
        jax_cache_dir=_jax_cache_dir(),
    )
    serve(
        config,
        token=_token(args),
        host=args.host,
        port=args.port,
        max_body_bytes=args.max_body_bytes,
    )
    return EXIT_OK


def _cmd_watch(args: argparse.Namespace) -> int:
    from datakiln.service.watch import watch

    spec = _spec_from_args(args)
    baked = watch(
        spec,
        interval_s=args.interval,
        rounds=args.rounds,
        on_bake=_print_report,
        lease_wait_s=args.wait,
        jax_cache_dir=_jax_cache_dir(),
    )
    print(f"watch: {baked} bakes")
    return EXIT_OK


def _flags_given(args: argparse.Namespace, names: Mapping[str, str]) -> dict[str, Any]:
    """The table fields set on the command line (flags left at None were not given)."""
    return {
        field: getattr(args, dest)
        for dest, field in names.items()
        if getattr(args, dest) is not None
    }


def _infer_modality(sources: Sequence[str], given: Mapping[str, bool]) -> str | None:
    """The modality the sources' file endings and the flags given point to, if any."""
    from datakiln.errors import SpecError
    from datakiln.readers.listing import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS
    from datakiln.readers.text import TEXT_EXTENSIONS

    kinds = {name for name, flagged in given.items() if flagged}
    for source in sources:
        ending = os.path.splitext(source.rstrip("/"))[1].lower()
        for name, endings in (
            ("text", tuple(TEXT_EXTENSIONS)),
            ("audio", AUDIO_EXTENSIONS),
            ("image", IMAGE_EXTENSIONS),
        ):
            if ending in endings:
                kinds.add(name)
    if len(kinds) > 1:
        raise SpecError(
            f"the sources and flags mix modalities ({', '.join(sorted(kinds))}); pass "
            "--modality image|text|audio and only that modality's flags"
        )
    return kinds.pop() if kinds else None


def _spec_from_args(args: argparse.Namespace) -> Any:
    from datakiln.errors import SpecError
    from datakiln.etl.spec import AudioParams, BakeSpec, ImageParams, TextBakeParams

    toml = len(args.sources) == 1 and args.sources[0].endswith(".toml")
    if toml:
        spec = BakeSpec.from_toml(args.sources[0])
    else:
        if not args.out:
            raise SpecError("--out is required when baking SOURCES (or pass a SPEC.toml)")
        spec = BakeSpec(sources=tuple(args.sources), output=args.out)
    image = _flags_given(args, IMAGE_FLAGS)
    if args.size is not None:
        image["height"] = image["width"] = args.size
    if getattr(args, "image_codec", None):
        image.update(_image_codec(args.image_codec))
    text = _flags_given(args, TEXT_FLAGS)
    audio = _flags_given(args, AUDIO_FLAGS)
    if args.fields or (toml and spec.modality == "records"):
        return _records_spec_from_args(args, spec, {"image": image, "text": text, "audio": audio})
    given = {"image": bool(image), "text": bool(text), "audio": bool(audio)}
    if args.modality:
        modality = args.modality
    elif toml:
        modality = spec.modality
    else:
        modality = _infer_modality(args.sources, given) or "image"
    for name, flagged in given.items():
        if flagged and name != modality:
            raise SpecError(
                f"{name} flags were given, but this is a {modality} bake; pass --modality "
                f"{name}, or leave them out"
            )
    if args.no_normalize:
        if modality == "image":
            image["normalize"] = False
        elif modality == "audio":
            audio["normalize"] = False
        else:
            raise SpecError("--no-normalize applies to image and audio bakes")
    top: dict[str, Any] = {"modality": modality}
    if args.out and toml:
        top["output"] = args.out
    for name in ("shard_size", "scheduler", "workers", "max_rejected", "dedup", "dedup_distance"):
        if getattr(args, name) is not None:
            top[name] = getattr(args, name)
    _user_steps_from_args(args, spec, top)
    if "shard_size" not in top and modality != spec.modality:
        top["shard_size"] = None  # the default of the modality chosen here, not the first one
    if image:
        top["image"] = ImageParams.from_dict({**spec.image.to_dict(), **image})
    if text:
        top["text"] = TextBakeParams.from_dict({**spec.text.to_dict(), **text})
    if audio:
        top["audio"] = AudioParams.from_dict({**spec.audio.to_dict(), **audio})
    return BakeSpec.from_dict({**_spec_fields(spec), **top})


def _parse_fields(texts: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``images=image:jpg;png,captions=text:txt`` as field tables.

    From one ``--fields`` or several; a name given twice is an error, not a replacement.
    """
    from datakiln.errors import SpecError

    fields: dict[str, dict[str, Any]] = {}
    for text in texts:
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, eq, rest = item.partition("=")
            modality, _, column = rest.partition(":")
            if not eq or not name.strip() or not modality.strip():
                raise SpecError(
                    f"--fields takes NAME=MODALITY[:COLUMN] items separated by commas; got {item!r}"
                )
            name = name.strip()
            if name in fields:
                raise SpecError(f"--fields names the field {name!r} twice")
            fields[name] = {"modality": modality.strip(), "column": column.strip() or None}
    return fields


def _records_spec_from_args(
    args: argparse.Namespace, spec: Any, flags: Mapping[str, Mapping[str, Any]]
) -> Any:
    """A records spec: ``--fields`` (or the TOML's), with the modality flags applied.

    Each modality's flags apply to every field of that modality.
    """
    from datakiln.errors import SpecError
    from datakiln.etl.spec import BakeSpec

    if args.modality and args.modality != "records":
        raise SpecError("--fields makes a records bake; leave out --modality")
    fields = (
        _parse_fields(args.fields)
        if args.fields
        else {n: f.to_dict() for n, f in spec.fields.items()}
    )
    line_only = ("format", "field", "one_per_file", "target_bytes")
    for name, table in fields.items():
        extra = dict(flags.get(table["modality"], {}))
        if table["modality"] == "text":
            wrong = sorted(k for k in extra if k in line_only)
            if wrong:
                raise SpecError(f"{', '.join(wrong)} apply to line text, not to a text field")
        if args.no_normalize and table["modality"] in ("image", "audio"):
            extra["normalize"] = False
        fields[name] = {**table, **extra}
    top: dict[str, Any] = {"fields": fields, "modality": "records"}
    if args.source_format:
        top["source_format"] = args.source_format
    if args.out:
        top["output"] = args.out
    for name in ("shard_size", "scheduler", "workers", "max_rejected", "dedup", "dedup_distance"):
        if getattr(args, name) is not None:
            top[name] = getattr(args, name)
    _user_steps_from_args(args, spec, top)
    base = _spec_fields(spec)
    base.update(modality="records", shard_size=top.get("shard_size"))
    return BakeSpec.from_dict({**base, **top})


def _user_steps_from_args(args: argparse.Namespace, spec: Any, top: dict[str, Any]) -> None:
    """``--transform`` and ``--filter`` add to the spec file's transforms and filters."""
    from datakiln.errors import SpecError

    if args.transform:
        top["transforms"] = [*spec.transforms, *args.transform]
    filters = []
    for item in args.filter or ():
        name, eq, value = item.partition("=")
        if not eq:
            filters.append(item)
            continue
        try:
            number = float(value)
            filters.append({name.strip(): int(number) if number.is_integer() else number})
        except ValueError:
            raise SpecError(f"--filter {item!r}: {name} takes a number") from None
    if filters:
        top["filters"] = [*spec.filters, *filters]


def _spec_fields(spec: Any) -> dict[str, Any]:
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class _Progress:
    """Bake progress: a live bar on a terminal, log lines every ``interval_s`` otherwise."""

    def __init__(self, stream: Any = None, interval_s: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started = time.perf_counter()
        self.last = 0.0
        self.interval_s = interval_s
        self.drawn = False

    def __call__(self, event: Mapping[str, Any]) -> None:
        now = time.perf_counter()
        elapsed = max(now - self.started, 1e-9)
        done, total = event["inputs_done"], max(event["inputs_total"], 1)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 else float("inf")
        text = (
            f"{done}/{total} inputs, shards {event['shards_done']}/{event['shards_total']}, "
            f"{rate:.0f} inputs/s, ETA {eta:.0f} s, rejected {event['rejected']}"
        )
        if self.live:
            width = 28
            filled = int(width * done / total)
            bar = "#" * filled + "." * (width - filled)
            self.stream.write(f"\r[{bar}] {text}\x1b[K")
            self.stream.flush()
            self.drawn = True
        elif now - self.last >= self.interval_s or done >= total:
            self.last = now
            logger.info("progress: %s", text)

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _print_report(report: Any) -> None:
    rate = report.inputs / report.wall_s if report.wall_s > 0 else 0.0
    if report.up_to_date:
        print(f"cache at {report.url} is up to date ({report.shards} shards); nothing to do")
        print(report.summary_line())
        return
    rows = [
        ("cache", report.url),
        ("inputs", f"{report.inputs}"),
        ("baked", f"{report.baked}"),
        (
            "rejected",
            f"{report.rejected}"
            + (
                f" ({report.blank} blank, {report.rejected - report.blank} broken)"
                if report.blank
                else ""
            ),
        ),
        *(
            (f"  {reason}", f"{count}")
            for reason, count in sorted(report.rejected_by_reason.items())
        ),
        ("shards", f"{report.shards} ({report.shards_skipped} already done)"),
        ("bytes in / out", f"{_human_bytes(report.bytes_in)} / {_human_bytes(report.bytes_out)}"),
        ("wall time", f"{report.wall_s:.1f} s ({rate:.0f} inputs/s)"),
        ("kernel shapes", f"{report.kernel_shapes} (each compiles at most twice)"),
        *((("store retries", f"{report.retries}"),) if report.retries else ()),
        *((f"  {stage} (summed)", f"{secs:.2f} s") for stage, secs in report.stage_s.items()),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print(report.summary_line())


def _jax_cache_dir() -> str | None:
    """The persistent JAX compilation cache: $DATAKILN_JAX_CACHE, else ~/.cache/datakiln/jax.

    Set DATAKILN_JAX_CACHE to an empty string to turn it off.
    """
    value = os.environ.get("DATAKILN_JAX_CACHE")
    if value is None:
        return str(Path.home() / ".cache" / "datakiln" / "jax")
    return value or None


def _cmd_bake(args: argparse.Namespace) -> int:
    from datakiln.errors import SourceError
    from datakiln.etl.bake import bake, plan_only

    spec = _spec_from_args(args)
    try:
        if args.dry_run or args.command == "plan":
            summary = plan_only(spec)
            if args.json:
                _print_json(dataclasses.asdict(summary))
                return EXIT_OK
            for line in summary.lines():
                print(line)
            return EXIT_OK
        report = bake(
            spec,
            progress=_Progress(),
            lease_wait_s=args.wait,
            jax_cache_dir=_jax_cache_dir(),
            force_unlock=args.force_unlock,
        )
    except SourceError as err:
        if args.modality is None and spec.modality == "image" and "matched no files" in str(err):
            raise SourceError(f"{err}; for text or audio pass --modality text|audio") from err
        raise
    if args.json:
        _print_json(report.to_dict())
    else:
        _print_report(report)
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from datakiln.cache.open import CachedDataset
    from datakiln.errors import SpecError
    from datakiln.etl.bake import bake
    from datakiln.etl.spec import BakeSpec, ImageParams
    from datakiln.testing.image_corpus import write_image_corpus

    if args.corpus_only and not args.corpus:
        raise SpecError("--corpus-only needs --corpus DIR to write the corpus to")
    with tempfile.TemporaryDirectory(prefix="datakiln-demo-") as tmp:
        where = args.corpus or tmp
        info = write_image_corpus(where, n=args.images, seed=0)
        print(
            f"wrote a demo corpus of {len(info.good)} images and {len(info.broken)} broken "
            f"files to {where}"
        )
        if args.corpus_only:
            return EXIT_OK
        spec = BakeSpec(
            sources=(where,),
            output=args.out,
            shard_size=128,
            image=ImageParams(height=64, width=64, labels="parent"),
        )
        progress = _Progress()
        try:
            report = bake(spec, progress=progress, jax_cache_dir=_jax_cache_dir())
        finally:
            progress.close()
    _print_report(report)
    dataset = CachedDataset(args.out, rngs=0)  # what open_cache gives for the whole cache
    batch = dataset.get_batch(8)
    print(f"opened {dataset!r}; classes {dataset.class_names}")
    print(
        f"a random batch: images {batch['images'].dtype}{batch['images'].shape} in "
        f"[{batch['images'].min():.2f}, {batch['images'].max():.2f}], labels "
        f"{batch['labels'].tolist()}"
    )
    return EXIT_OK


def _print_user_steps(spec: dict[str, Any], counts: dict[str, Any]) -> None:
    """The spec's transforms, filters and dedup, with the rows they left out."""
    for t in spec.get("transforms") or ():
        version = f" version {t['version']}" if t.get("version") else ""
        print(f"transform {t['function']}{version}" + (f" {t['params']}" if t["params"] else ""))
    if spec.get("filters"):
        names = [
            f.get("function") or ", ".join(f"{k}={v}" for k, v in f.items())
            for f in spec["filters"]
        ]
        print(f"filters: {'; '.join(names)}: {counts.get('filtered', 0)} rows filtered out")
    if spec.get("dedup"):
        within = f" within {spec['dedup_distance']} bits" if spec["dedup"] == "near" else ""
        print(f"dedup {spec['dedup']}{within}: {counts.get('duplicates', 0)} duplicates rejected")


def _cmd_inspect(args: argparse.Namespace) -> int:
    from datakiln.cache.inspect import describe_cache

    info = describe_cache(args.url)
    if args.json:
        _print_json(info)
        return EXIT_OK
    counts = info["counts"]
    print(
        f"{info['url']}: datakiln cache format v{info['format_version']}, version "
        f"{info['version']}, {info['modality']}, created {info['created']}"
    )
    print(f"cache key {info['cache_key'][:16]}…, {info['shards']} shards")
    blank = counts.get("blank", 0)  # absent from older manifests
    print(
        f"inputs {counts['inputs']} = baked {counts['baked']} + rejected {counts['rejected']}"
        + (f" ({blank} blank, {counts['rejected'] - blank} broken)" if blank else "")
    )
    spec = info["spec"]
    _print_user_steps(spec, counts)
    if info["modality"] == "records":
        _print_record_fields(info)
    else:
        params = ", ".join(f"{k}={v}" for k, v in spec.get(info["modality"], {}).items())
        print(f"spec: {params}")
    for name, f in info["fields"].items():
        ratio = f["compression_ratio"]
        codec = f" codec {f['codec']}," if f.get("codec") not in (None, "none") else ""
        disk = f", disk/raw {f['disk_ratio']:.3f}" if f.get("disk_ratio") else ""
        print(
            f"field {name}: {f['dtype']}{tuple(f['shape'])} (read as {f['read_dtype']}),{codec} "
            f"{_human_bytes(f['on_disk_bytes'])} on disk, {_human_bytes(f['in_memory_bytes'])} "
            f"in memory" + (f", ratio {ratio}" if ratio else "") + disk
        )
    if info["classes"]:
        print("classes: " + ", ".join(f"{k} ({v})" for k, v in info["classes"].items()))
    stats = info.get("statistics") or {}
    if stats.get("mean"):
        mean = ", ".join(f"{m:.3f}" for m in stats["mean"])
        std = ", ".join(f"{s:.3f}" for s in stats["std"])
        print(f"per-channel mean [{mean}], std [{std}] (pixels scaled to [0, 1])")
    vocabulary = info.get("vocabulary")
    if vocabulary and vocabulary.get("total_sequences") is not None:
        v, p = vocabulary, vocabulary["length_percentiles"]
        print(
            f"vocabulary ({v['tokenizer']}, {v['vocab_size']} ids): {v['unique_tokens']} unique "
            f"tokens ({v['coverage']:.1%} of the word ids), {v['n_tokens']} tokens in "
            f"{v['total_sequences']} samples"
        )
        print(
            f"token lengths: mean {v['mean_length']:.1f}, p50 {p['p50']}, p90 {p['p90']}, "
            f"p99 {p['p99']}, max {p['max']} of {v['max_length']}; {v['n_truncated']} truncated"
        )
    if info.get("encodings"):
        detected = " (detected)" if spec.get("text", {}).get("encoding") == "auto" else ""
        print(
            f"encodings{detected}: "
            + ", ".join(
                f"{codec} ({e['files']} file{'s' * (e['files'] != 1)}, {e['samples']} samples)"
                for codec, e in info["encodings"].items()
            )
        )
    durations = info.get("durations")
    if durations and durations.get("clips"):
        d = durations
        print(
            f"clip durations: min {d['duration_min_s']:.3f} s, mean {d['duration_mean_s']:.3f} s, "
            f"max {d['duration_max_s']:.3f} s ({d['duration_total_s']:.1f} s in all); stored "
            f"{d['target_duration_s']:g} s each: {d['padded']} padded, {d['trimmed']} trimmed"
            + (f", {d['clipped']} clipped to int16's range" if d.get("clipped") else "")
        )
    for reason, r in info["rejected"].items():
        print(f"rejected {r['count']:6d}  {reason}  e.g. {r['examples'][0]}")
    return EXIT_OK


def _print_record_fields(info: Mapping[str, Any]) -> None:
    """Each record field: where it is read from and what the bake saw in it."""
    for name, entry in info["record_fields"].items():
        required = "" if entry["required"] else ", optional"
        print(f"record field {name}: {entry['modality']} from {entry['column']!r}{required}")
        stats = entry.get("statistics") or {}
        if entry.get("classes"):
            print("  classes: " + ", ".join(f"{k} ({v})" for k, v in entry["classes"].items()))
        if stats.get("mean"):
            mean = ", ".join(f"{m:.3f}" for m in stats["mean"])
            print(f"  per-channel mean [{mean}] (pixels scaled to [0, 1])")
        if stats.get("total_sequences") is not None:
            print(
                f"  {stats['total_sequences']} texts, {stats['n_tokens']} tokens, mean length "
                f"{stats['mean_length']:.1f} of {stats['max_length']}, "
                f"{stats['n_truncated']} truncated"
            )
        if stats.get("clips") is not None:
            print(
                f"  {stats['clips']} clips, {stats['duration_total_s']:.1f} s of source audio, "
                f"stored {stats['target_duration_s']:g} s each"
            )


def _cmd_verify(args: argparse.Namespace) -> int:
    from datakiln.cache.verify import verify_cache

    report = verify_cache(args.url)
    if args.json:
        _print_json({**dataclasses.asdict(report), "ok": report.ok})
        return EXIT_OK if report.ok else EXIT_FAILED
    for problem in report.problems:
        print(f"DAMAGED {problem}")
    state = "ok" if report.ok else f"{len(report.problems)} problems"
    print(f"{args.url}: {report.objects_checked} objects checked, {state}")
    return EXIT_OK if report.ok else EXIT_FAILED


def _cmd_preview(args: argparse.Namespace) -> int:
    from datakiln.preview import render_preview

    picture = render_preview(args.url, count=args.count, seed=args.seed)
    picture.save(args.output)
    print(f"wrote {args.output} ({picture.width}x{picture.height})")
    return EXIT_OK


def _cmd_ls(args: argparse.Namespace) -> int:
    from datakiln.cache.catalog import list_caches

    entries = list_caches(args.prefix)
    if args.json:
        _print_json([dataclasses.asdict(e) for e in entries])
        return EXIT_OK
    if not entries:
        print(f"no caches under {args.prefix}")
        return EXIT_OK
    width = max(len(e.url) for e in entries)
    print(f"{'cache':<{width}}  {'size':>10}  {'rows':>9}  {'modality':<8}  version  created")
    for e in entries:
        print(
            f"{e.url:<{width}}  {_human_bytes(e.size_bytes):>10}  {e.rows:>9}  "
            f"{e.modality:<8}  {e.version:>7}  {e.created}"
        )
    return EXIT_OK


def _cmd_gc(args: argparse.Namespace) -> int:
    from datakiln.cache.catalog import collect_garbage

    removed = collect_garbage(args.url, dry_run=args.dry_run, grace_s=args.grace)
    if args.json:
        _print_json(removed)
        return EXIT_OK
    verb = "would remove" if args.dry_run else "removed"
    for path in removed:
        print(f"{verb} {path}")
    print(f"{verb} {len(removed)} paths")
    return EXIT_OK


COMMANDS = {
    "preview": _cmd_preview,
    "ls": _cmd_ls,
    "gc": _cmd_gc,
    "bake": _cmd_bake,
    "plan": _cmd_bake,
    "demo": _cmd_demo,
    "inspect": _cmd_inspect,
    "verify": _cmd_verify,
    "serve": _cmd_serve,
    "watch": _cmd_watch,
}
# The public function each command calls and prints the result of (the docs' command pages
# name it; tests/test_api_parity.py checks that both give the same result).
FUNCTIONS = {
    "bake": "datakiln.bake",
    "plan": "datakiln.plan",
    "inspect": "datakiln.inspect",
    "verify": "datakiln.verify",
    "ls": "datakiln.ls",
    "gc": "datakiln.gc",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``datakiln`` command line with ``argv`` (default: ``sys.argv``); the exit code."""
    args = _parser().parse_args(argv)
    _setup_logging(args.verbosity)
    try:
        return COMMANDS[args.command](args)
    except BakeError as err:
        print(f"datakiln: bake failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    except DatakilnError as err:
        print(f"datakiln: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. `datakiln inspect URL | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("datakiln: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
