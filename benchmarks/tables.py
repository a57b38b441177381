"""BENCHMARKS.md's tables, made from the JSON results in ``benchmarks/results/``.

    python benchmarks/tables.py            # rewrite every table of BENCHMARKS.md in place
    python benchmarks/tables.py --check    # exit 1 (and show the difference) when they differ

A table sits between ``<!-- table:NAME -->`` and ``<!-- /table -->``; NAME is a benchmark
(``bench_records``), or a benchmark and one of its tables (``bench_imagenet.disk``), and its
rows come from ``results/<benchmark>.json`` through the function registered for NAME below.
Under each table a line gives the command, the date, the load average before and after and
the git commit that the JSON records. Everything outside the markers is prose and is kept.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "BENCHMARKS.md"
RESULTS_DIR = HERE / "results"

MARKER = re.compile(r"<!-- table:(?P<name>[\w.-]+) -->\n.*?<!-- /table -->", re.DOTALL)

Rows = list[Sequence[Any]]
Table = tuple[Sequence[str], Rows]
Builder = Callable[[dict[str, Any]], Table]


def fmt(value: Any, digits: int | None = None) -> str:
    """A figure as BENCHMARKS.md writes it: thousands separated, precision by magnitude."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if digits is None:
        size = abs(value)
        digits = 0 if size >= 100 else 1 if size >= 10 else 2 if size >= 0.1 else 3
    return f"{value:,.{digits}f}"


def runs_text(values: Iterable[float], digits: int | None = None) -> str:
    return " / ".join(fmt(v, digits) for v in values)


def markdown(header: Sequence[str], rows: Rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def provenance(result: dict[str, Any]) -> str:
    """The line under a table: where its figures come from and how loaded the machine was."""
    m = result["machine"]
    commit = (m.get("git_commit") or "unknown")[:10]
    dirty = " (+ uncommitted changes)" if (m.get("git_commit") or "").endswith("+dirty") else ""
    before, after = m["load_before"][0], m["load_after"][0]
    return (
        f"<sub>`{result['command']}` · {result['date'].replace('T', ' ')[:16]} UTC · "
        f"{m['cpus']} CPUs · load average {before:.2f} before, {after:.2f} after · "
        f"commit {commit}{dirty}</sub>"
    )


def render_block(name: str, results_dir: Path, builders: dict[str, Builder]) -> str:
    bench = name.split(".", 1)[0]
    path = results_dir / f"{bench}.json"
    if name not in builders:
        raise SystemExit(f"BENCHMARKS.md names table {name!r}, which tables.py does not define")
    if not path.exists():
        raise SystemExit(f"table {name!r} needs {path}: run benchmarks/{bench}.py first")
    result = json.loads(path.read_text())
    header, rows = builders[name](result)
    return (
        f"<!-- table:{name} -->\n{markdown(header, rows)}\n\n{provenance(result)}\n<!-- /table -->"
    )


def render(text: str, results_dir: Path, builders: dict[str, Builder]) -> str:
    """``text`` with every marked table regenerated."""
    return MARKER.sub(lambda m: render_block(m["name"], results_dir, builders), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the doc is out of date")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    text = args.doc.read_text()
    new = render(text, args.results, BUILDERS)
    unused = sorted(set(BUILDERS) - {m["name"] for m in MARKER.finditer(new)})
    if unused:
        print(f"note: tables defined but not placed in {args.doc.name}: {', '.join(unused)}")
    if args.check:
        if new == text:
            return 0
        diff = difflib.unified_diff(
            text.splitlines(), new.splitlines(), str(args.doc), "regenerated", lineterm=""
        )
        print("\n".join(diff))
        print(f"{args.doc} differs from its JSON results: run python benchmarks/tables.py")
        return 1
    if new != text:
        args.doc.write_text(new)
        print(f"rewrote the tables of {args.doc}")
    return 0


# -- the tables, one function each ---------------------------------------------------------


def _x(ratio: float | None, bold: bool = False) -> str:
    """A ratio as ``0.87×``."""
    if ratio is None:
        return "–"
    text = f"{ratio:.2f}×"
    return f"**{text}**" if bold else text


def _n(r: dict[str, Any], key: str) -> int:
    return len(r["runs"][key])


def _bake_images(r: dict[str, Any]) -> Table:
    size = r["facts"]["size"]
    labels = {
        "pillow_decode": "Pillow decode only (open, convert RGB, asarray), one thread",
        "pillow_draft": f"Pillow `draft(({size}, {size}))` decode only, one thread",
        "bake": "**`datakiln.bake`** (fetch, decode, resize kernel, Zarr + Parquet, markers, "
        "manifest)",
    }
    rows: Rows = [
        (label, fmt(r["medians"][k]), runs_text(r["runs"][k])) for k, label in labels.items()
    ]
    rows.append(("bake ÷ draft decode", _x(r["ratios"]["bake_vs_draft"], True), ""))
    rows.append(("bake ÷ plain decode", _x(r["ratios"]["bake_vs_decode"]), ""))
    return ("what", f"images/s (median of {_n(r, 'bake')})", "all runs"), rows


LAYOUT_LABELS = {
    "sharded_1x_raw": "**1-sample inner chunks, 1,024-row shards, uncompressed (chosen)**",
    "sharded_1x_zstd1": "1-sample inner chunks, shards, zstd level 1 (direct: per-chunk decode)",
    "sharded_1x_blosc_lz4": "1-sample inner chunks, shards, blosc-lz4",
    "chunks_256_zstd1": "256-row chunks, zstd level 1",
    "chunks_16_raw": "16-row chunks, uncompressed",
}


def _layouts(r: dict[str, Any]) -> Table:
    rows: Rows = []
    for key, layout in r["facts"]["layouts"].items():
        direct = r["medians"].get(f"{key}.direct")
        rows.append(
            (
                LAYOUT_LABELS.get(key, layout["label"]),
                f"{layout['disk_vs_raw']:.3f}",
                fmt(r["medians"][f"{key}.zarr_python"]),
                fmt(direct),
            )
        )
    return ("layout", "disk / raw", "zarr-python samples/s", "direct reader samples/s"), rows


def _read(r: dict[str, Any]) -> Table:
    m, ratio = r["medians"], r["ratios"]
    rows: Rows = []
    labels = (
        ("random_floor_memmap", "random batches, float32 memmap floor", None),
        ("random_datakiln", "**random `get_batch(indices=…)`, datakiln**", "random_vs_floor"),
        ("random_zarr_python", "random batches, zarr-python on the same store", None),
        ("random_hf_datasets", "random batches, Hugging Face `datasets` Arrow copy", None),
        ("epoch_floor_memmap", "shuffled epoch, memmap floor", None),
        ("epoch_datakiln_loader", "**shuffled epoch, `datakiln.Loader`, `prefetch=2`**", None),
        (
            "epoch_datakiln_loader_prefetch0",
            "shuffled epoch, `datakiln.Loader`, `prefetch=0`",
            None,
        ),
        ("epoch_hf_datasets", "shuffled epoch, Hugging Face `datasets`", None),
    )
    for key, label, _ in labels:
        if key not in m:
            continue
        floor = m["epoch_floor_memmap" if key.startswith("epoch") else "random_floor_memmap"]
        bold = key in ("random_datakiln", "epoch_datakiln_loader")
        rows.append((label, fmt(m[key]), _x(m[key] / floor, bold)))
    del ratio
    memory = r["facts"]["loader_epoch_memory"]
    rows.append(
        (
            "memory of a fresh process after one Loader epoch: peak RSS (anonymous / file-backed)",
            f"{memory['peak_rss_mib']:,.0f} MiB "
            f"({memory['rss_anon_mib']:,.0f} / {memory['rss_file_mib']:,.0f} MiB)",
            "",
        )
    )
    n = _n(r, "random_datakiln")
    return ("what", f"samples/s (median of {n})", "vs floor"), rows


def _scaling(r: dict[str, Any]) -> Table:
    m = r["medians"]
    labels = {
        "one_core": "one core (`taskset -c 0 datakiln bake`: threads)",
        "whole_machine": "**whole machine (default `--scheduler auto`: a worker process per CPU)**",
        "whole_machine_threads": "whole machine, `--scheduler threads`",
        "cluster_1_worker": "`--workers 1` (the bake starts a 1-process LocalCluster)",
        "cluster_2_workers": "`--workers 2` (the bake starts a 2-process LocalCluster)",
        "running_cluster_1": "`--scheduler` on a running 1-process LocalCluster",
        "running_cluster_2": "`--scheduler` on a running 2-process LocalCluster",
    }
    rows: Rows = [
        (label, fmt(m[k]), runs_text(r["runs"][k])) for k, label in labels.items() if k in m
    ]
    sizes = sorted(int(k.split("_")[1]) for k in m if k.startswith("inputs_"))
    rows += [
        (f"{n:,} inputs, whole machine", fmt(m[f"inputs_{n}"]), runs_text(r["runs"][f"inputs_{n}"]))
        for n in sizes
    ]
    ratios = r["ratios"]
    rows.append(
        (
            "whole machine ÷ one core",
            _x(ratios.get("whole_machine_vs_one_core"), True),
            runs_text(r["paired_ratios"].get("whole_machine_vs_one_core", []), 2),
        )
    )
    rows.append(("threads ÷ one core", _x(ratios.get("threads_vs_one_core")), ""))
    rows.append(
        ("2 workers ÷ 1 (running clusters)", _x(ratios.get("running_cluster_two_vs_one")), "")
    )
    rss = r["facts"].get("worker_peak_rss_mib_after_largest")
    if rss:
        rows.append(
            (
                f"peak RSS of each worker after the {sizes[-1]:,}-input bake",
                " / ".join(f"{v} MiB" for v in rss),
                "",
            )
        )
    return ("what", f"inputs/s (median of {_n(r, 'one_core')})", "runs"), rows


def _text_audio(r: dict[str, Any]) -> Table:
    m, ratios, facts = r["medians"], r["ratios"], r["facts"]
    rows: Rows = []
    if "text.bake" in m:
        text = facts["text"]
        rows.append(
            (
                f"text: {text['lines']:,} lines, word_hash, vocab 10k, max_length 512",
                f"{m['text.bake'] / 1e6:.2f} M tokens/s "
                f"({m['text.bake_lines'] / 1e3:.0f}k lines/s)",
                f"`tokenizers` ByteLevel BPE `encode_batch`: {m['text.bpe'] / 1e6:.2f} M tokens/s "
                f"({m['text.bpe_lines'] / 1e3:.0f}k lines/s)",
                f"{_x(ratios['text.bake_vs_bpe_tokens'], True)} tokens "
                f"({_x(ratios['text.bake_vs_bpe_lines'])} lines)",
                "≥ 4×",
            )
        )
    if "audio.bake" in m:
        rows.append(
            (
                f"audio: {facts['audio']['clips']} WAVs → 16 kHz, 1 s, 80 mels",
                f"{fmt(m['audio.bake'])} clips/s",
                f"librosa per clip: {fmt(m['audio.librosa'])} clips/s",
                _x(ratios["audio.bake_vs_librosa"], True),
                "≥ 3×",
            )
        )
    runs = _n(r, "text.bake" if "text.bake" in m else "audio.bake")
    return ("what", f"bake (median of {runs})", "baseline (same run)", "ratio", "target"), rows


def _big(value: float) -> str:
    """Millions as ``4.44 M``, smaller figures as :func:`fmt` writes them."""
    return f"{value / 1e6:.2f} M" if value >= 1e6 else fmt(value)


def _kernels(r: dict[str, Any]) -> Table:
    m, ratios = r["medians"], r["ratios"]
    labels = (
        ("text.word_hash_jax", "word-hash tokenize, JAX (host packing + jit kernel)", "tokens/s"),
        (
            "text.word_hash_jax_kernel_only",
            "word-hash kernel alone (packed beforehand)",
            "tokens/s",
        ),
        ("text.word_hash_python_fnv", "plain Python word hash (FNV-1a)", "tokens/s"),
        ("text.word_hash_python_fnv_cached", "plain Python word hash, per-word cache", "tokens/s"),
        ("text.byte_jax", "byte tokenizer, JAX", "tokens/s"),
        ("text.byte_numpy", "byte tokenizer, numpy", "tokens/s"),
        ("audio.mel_jax", "log-mel, jit, batches of 1 s clips at 16 kHz", "clips/s"),
        ("audio.mel_librosa", "log-mel, librosa per clip", "clips/s"),
        ("audio.mel_librosa_stft_matmul", "log-mel, librosa STFT + filter bank matmul", "clips/s"),
        ("audio.features_jax_from_16000", "whole audio kernel from 16 kHz, JAX", "clips/s"),
        ("audio.features_librosa_from_16000", "the same, librosa per clip", "clips/s"),
        ("audio.features_jax_from_44100", "whole audio kernel from 44.1 kHz, JAX", "clips/s"),
        ("audio.features_librosa_from_44100", "the same, librosa (resample first)", "clips/s"),
    )
    # the JAX side of each pair, and the ratio to its baseline
    pairs = {
        "text.word_hash_jax": "text.word_hash_jax_vs_python_cached",
        "text.byte_jax": "text.byte_jax_vs_numpy",
        "audio.mel_jax": "audio.mel_jax_vs_librosa",
        "audio.features_jax_from_16000": "audio.features_jax_vs_librosa_from_16000",
        "audio.features_jax_from_44100": "audio.features_jax_vs_librosa_from_44100",
    }
    rows: Rows = []
    for key, label, unit in labels:
        if key in m:
            ratio = _x(ratios.get(pairs[key]), True) if key in pairs else ""
            runs = " / ".join(_big(v) for v in r["runs"][key])
            rows.append((label, f"{_big(m[key])} {unit}", ratio, runs))
    header = ("what", f"median of {len(r['runs'][labels[0][0]])}", "vs its baseline", "runs")
    return header, rows


def _records(r: dict[str, Any]) -> Table:
    return _records_forms(r["runs"], "")


def _records_cold(r: dict[str, Any]) -> Table:
    return _records_forms(r["facts"]["cold"], ", inputs out of the page cache")


def _records_forms(runs: dict[str, list[float]], where: str) -> Table:
    """Each form's median, its ratio to the folder's and the runs' paired ratios."""
    folder = runs["folder"]
    rows: Rows = [("folder", fmt(statistics.median(folder)), "1", "", runs_text(folder))]
    for form in ("tar", "parquet", "csv"):
        paired = [a / b for a, b in zip(runs[form], folder, strict=True)]
        ratio = statistics.median(runs[form]) / statistics.median(folder)
        rows.append(
            (
                form,
                fmt(statistics.median(runs[form])),
                _x(ratio, True),
                runs_text(paired, 2),
                runs_text(runs[form]),
            )
        )
    header = (
        f"form{where}",
        f"inputs/s (median of {len(folder)})",
        "ratio to folder",
        "paired ratios",
        "all runs",
    )
    return header, rows


def _records_speech(r: dict[str, Any]) -> Table:
    speech = r["facts"]["speech"]
    folder = statistics.median(speech["audio_folder"])
    rows: Rows = [("audio bake of the folder", fmt(folder), "1", runs_text(speech["audio_folder"]))]
    for key, label in (
        ("audio_tsv", "records: TSV naming the clips (an audio field)"),
        ("speech_tsv", "records: the same TSV, an audio and a transcript field"),
    ):
        median = statistics.median(speech[key])
        rows.append((label, fmt(median), _x(median / folder, True), runs_text(speech[key])))
    n = len(speech["audio_folder"])
    header = (
        f"{speech['clips']} WAV clips",
        f"clips/s (median of {n})",
        "ratio to the audio bake",
        "all runs",
    )
    return header, rows


def _records_rss(r: dict[str, Any]) -> Table:
    rss = r["facts"]["rss_mib"]
    rows: Rows = [
        (
            "plain",
            f"{rss['small_tar_bytes'] / 2**20:,.0f} MiB",
            fmt(rss["small_tar"][0]),
            f"{rss['small_tar'][1]:,.0f} MiB",
        ),
        (
            "padded",
            f"{rss['big_tar_bytes'] / 2**30:.2f} GiB",
            fmt(rss["big_tar"][0]),
            f"{rss['big_tar'][1]:,.0f} MiB",
        ),
    ]
    return ("archive", "size", "records baked", "peak RSS"), rows


def _records_s3(r: dict[str, Any]) -> Table:
    s3 = r["facts"]["s3"]
    folder = statistics.median(s3["folder"])
    rows: Rows = []
    for form in ("folder", "parquet"):
        median = statistics.median(s3[form])
        ratio = "1" if form == "folder" else _x(median / folder, True)
        rows.append((form, fmt(median), ratio, runs_text(s3[form])))
    n = len(s3["folder"])
    return ("form, from S3", f"inputs/s (median of {n})", "ratio to folder", "all runs"), rows


def _remote(r: dict[str, Any]) -> Table:
    m, ratios, rss = r["medians"], r["ratios"], r["facts"]["rss"]
    rows: Rows = [
        (
            "second epoch via `local_dir` / one epoch of the local cache",
            f"{m['second_epoch_local_dir']:.3f} s / {m['local_cache_epoch']:.3f} s",
            _x(ratios["second_epoch_vs_local"], True),
            "≥ 0.9×",
        ),
        (
            "first epoch from S3 (fresh `local_dir`) / `cat_ranges` floor",
            f"{m['first_epoch_s3']:.3f} s / {m['cat_ranges_floor']:.3f} s",
            _x(ratios["first_epoch_vs_floor"], True),
            "≥ 0.5×",
        ),
        (
            '`dtype="raw"` random `read_batch(128)` / uint8 memmap',
            f"{fmt(m['raw_batch'])} / {fmt(m['uint8_memmap'])} samples/s",
            _x(ratios["raw_vs_memmap"], True),
            "≥ 0.8×",
        ),
        (
            "plain `device_put` loop / `Loader(device_put=True)`",
            f"{m['memmap_device_put_loop']:.3f} s / {m['loader_device_put_epoch']:.3f} s",
            _x(ratios["device_put_loader_vs_loop"]),
            "report",
        ),
        (
            f"peak RSS, one S3 epoch, `local_limit` {rss['local_limit_mib']} MiB (¼ of the cache)",
            f"{rss['peak_mib']:.0f} MiB ({rss['after_open_mib']:.0f} after open)",
            "",
            "bounded",
        ),
    ]
    return ("what", f"medians of {_n(r, 'first_epoch_s3')}", "ratio", "target"), rows


def _service(r: dict[str, Any]) -> Table:
    runs, m = r["runs"], r["medians"]
    n = len(runs["bakes"])

    def row(label: str, fn: Callable[[int], str], median: str) -> Sequence[Any]:
        return (label, *[fn(k) for k in range(n)], median)

    rows: Rows = [
        row(
            "distinct jobs / bake processes",
            lambda k: f"{runs['distinct_jobs'][k]:.0f} / {runs['bakes'][k]:.0f}",
            f"**{m['distinct_jobs']:.0f} / {m['bakes']:.0f}**",
        ),
        row(
            "all succeeded",
            lambda k: fmt(bool(runs["all_succeeded"][k])),
            fmt(bool(m["all_succeeded"])),
        ),
        row(
            "submissions answered in",
            lambda k: f"{runs['submit_s'][k]:.1f} s",
            f"{m['submit_s']:.1f} s",
        ),
        row("all baked in", lambda k: f"{runs['bake_s'][k]:.1f} s", f"{m['bake_s']:.1f} s"),
        row(
            "idle: p50 / p99",
            lambda k: f"{runs['idle_p50_ms'][k]:.1f} / {runs['idle_p99_ms'][k]:.1f} ms",
            f"{m['idle_p50_ms']:.1f} / {m['idle_p99_ms']:.1f} ms",
        ),
        row(
            "during bakes: p50 / p99",
            lambda k: f"{runs['load_p50_ms'][k]:.1f} / {runs['load_p99_ms'][k]:.1f} ms",
            f"**{m['load_p50_ms']:.1f} / {m['load_p99_ms']:.1f} ms**",
        ),
        row(
            "during bakes: max",
            lambda k: f"{runs['load_max_ms'][k]:.0f} ms",
            f"{m['load_max_ms']:.0f} ms",
        ),
        row(
            "service CPU per request (idle)",
            lambda k: f"{runs['service_cpu_ms_per_request'][k]:.2f} ms",
            f"{m['service_cpu_ms_per_request']:.2f} ms",
        ),
        row(
            "service RSS, max over the run",
            lambda k: f"{runs['rss_max_mib'][k]:.0f} MiB",
            f"**{m['rss_max_mib']:.0f} MiB**",
        ),
    ]
    return ("what", *[f"run {k + 1}" for k in range(n)], "median"), rows


def _imagenet_bake(r: dict[str, Any]) -> Table:
    m, ratios = r["medians"], r["ratios"]
    rows: Rows = []
    for size, fit in ((224, "center-crop"), (256, "stretch")):
        for codec in ("none", "jpeg"):
            name = f"bake.{size}-{fit}-{codec}"
            if f"{name}.bake" not in m:
                continue
            rows.append(
                (
                    f"{size}, {fit}, `{codec}`",
                    fmt(m[f"{name}.plain_decode"]),
                    fmt(m[f"{name}.draft_decode"]),
                    f"{fmt(m[name + '.bake'])} ({runs_text(r['runs'][name + '.bake'])})",
                    _x(ratios[f"{name}.bake_vs_draft"]),
                    _x(ratios[f"{name}.bake_vs_plain"]),
                )
            )
    header = (
        "bake",
        "Pillow plain decode",
        "Pillow draft decode",
        "bake (runs)",
        "bake / draft",
        "bake / plain",
    )
    return header, rows


CODEC_NOTES = {"zstd": " (level 3)", "png": " (level 1)", "jpeg": " q90"}


def _imagenet_disk(r: dict[str, Any]) -> Table:
    facts = r["facts"]
    rows: Rows = []
    for codec, disk in facts["disk_256"].items():
        per = disk["bytes_per_sample"]
        bold = codec == "jpeg"
        label = f"`{codec}`" + CODEC_NOTES.get(codec, "")
        rows.append(
            (
                f"**{label}**" if bold else label,
                fmt(per),
                f"{disk['disk_ratio']:.3f}",
                f"{per * 1.28e6 / 1e9:.1f} GB",
            )
        )
    rows.append(("source JPEGs (300–1000 px)", fmt(facts["source_jpeg_bytes_per_sample"]), "", ""))
    return ("codec", "bytes per sample", "stored / raw", "ImageNet (1.28 M)"), rows


def _imagenet_codecs(r: dict[str, Any]) -> Table:
    m = r["medians"]
    rows: Rows = []
    for codec in ("zstd", "blosc-lz4", "png", "jpeg"):
        if f"codec.{codec}.encode" in m:
            rows.append(
                (
                    f"`{codec}`",
                    *[
                        f"{m[f'codec.{codec}.{step}']:.2f}"
                        for step in ("encode", "decode", "decode_2_threads")
                    ],
                )
            )
    return ("codec", "encode", "decode", "decode, 2 threads (per image)"), rows


def _imagenet_reads(r: dict[str, Any]) -> Table:
    m = r["medians"]
    rows: Rows = []
    for codec in ("floor", "none", "zstd", "blosc-lz4", "png", "jpeg"):
        cells = [codec if codec == "floor" else f"`{codec}`"]
        for key, floor in (
            (f"warm.{codec}.random_batch", "warm.floor.random_batch"),
            (f"warm.{codec}.epoch", "warm.floor.epoch"),
            (f"cold.{codec}", "cold.floor"),
        ):
            value = m.get(key)
            cells += [fmt(value), "–" if value is None else f"{value / m[floor]:.2f}"]
        rows.append(cells)
    header = (
        "codec",
        "random `get_batch`",
        "vs floor",
        "warm epoch",
        "vs floor",
        "cold epoch",
        "vs floor",
    )
    return header, rows


def _imagenet_sweep(r: dict[str, Any]) -> Table:
    m, disk = r["medians"], r["facts"].get("sweep_disk", {})
    sizes = sorted({int(k.split("-")[0]) for k in disk})
    rows: Rows = []
    for size in sizes:
        none, jpeg = f"sweep.{size}-none", f"sweep.{size}-jpeg"
        rows.append(
            (
                f"{size} ({size * size * 3 / 1000:.0f} KB)",
                f"{fmt(disk[f'{size}-none']['bytes_per_sample'])} / "
                f"{fmt(disk[f'{size}-jpeg']['bytes_per_sample'])} B",
                *[
                    f"{fmt(m[f'{none}.{k}'])} / {fmt(m[f'{jpeg}.{k}'])}"
                    for k in ("random_batch", "epoch", "cold_epoch")
                ],
            )
        )
    header = (
        "size (raw bytes)",
        "disk `none` / `jpeg`",
        "`get_batch` `none` / `jpeg`",
        "warm epoch `none` / `jpeg`",
        "cold epoch `none` / `jpeg`",
    )
    return header, rows


def _transforms(r: dict[str, Any]) -> Table:
    m, ratios, paired = r["medians"], r["ratios"], r["paired_ratios"]
    labels = {
        "plain": "plain",
        "identity": "identity transform",
        "exact": '`dedup = "exact"`',
        "near": '`dedup = "near"` (pHash)',
        "embed": "`nnx` embedding (64-d float16)",
    }
    targets = {"identity": "≤ 5%", "exact": "≤ 3%", "near": "≤ 15%", "embed": "report"}
    rows: Rows = [("plain", fmt(m["plain"]), "1", "", "", "")]
    for key in ("identity", "exact", "near", "embed"):
        rows.append(
            (
                labels[key],
                fmt(m[key]),
                runs_text(paired[f"{key}_vs_plain"], 2),
                f"{100 * (1 - ratios[f'{key}_vs_plain']):.1f}%",
                f"**{100 * m[f'{key}_steps_share']:.1f}%**",
                targets[key],
            )
        )
    facts = r["facts"]
    rows.append(
        (
            "the encoder alone (jit, batches of 64, one thread)",
            fmt(facts["encoder_images_per_s_one_thread"]),
            "",
            "",
            f"{facts['encoder_thread_s_per_bake_s']} thread-s per s of bake",
            "",
        )
    )
    header = (
        "variant",
        f"images/s (median of {_n(r, 'plain')})",
        "vs plain, per run",
        "cost (ratio of medians)",
        "steps' share of task time",
        "target",
    )
    return header, rows


def _scale(r: dict[str, Any]) -> Table:
    m = r["medians"]
    rows_by_size = {row["samples"]: row for row in r["facts"]["rows"]}
    sizes = sorted(rows_by_size)

    def cells(fn: Callable[[int], str]) -> list[str]:
        out = []
        for n in sizes:
            try:
                out.append(fn(n))
            except KeyError:
                out.append("–")
        return out

    def s(value: float) -> str:
        if value < 1e-4:
            return "<0.1 ms"
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.1f} s"

    rows: Rows = [
        ("first bake (`report.json`)", *cells(lambda n: s(rows_by_size[n]["bake_s"]))),
        ("plan: read the previous version + plan", *cells(lambda n: s(m[f"{n}.plan.total_s"]))),
        (
            "planner peak RSS (growth over imports)",
            *cells(
                lambda n: (
                    f"{m[f'{n}.plan.peak_rss_mib']:.0f} MiB (+{m[f'{n}.plan.peak_growth_mib']:.0f})"
                )
            ),
        ),
        ("up-to-date re-bake", *cells(lambda n: s(m[f"{n}.recheck.recheck_s"]))),
        (
            "manifest size / parse",
            *cells(
                lambda n: (
                    f"{m[f'{n}.manifest.bytes'] / 1000:.1f} KB / {s(m[f'{n}.manifest.parse_s'])}"
                )
            ),
        ),
        (
            "`open_cache` (second open) / anonymous memory growth",
            *cells(
                lambda n: f"{s(m[f'{n}.open.open_s'])} / {m[f'{n}.open.anon_growth_mib']:.2f} MiB"
            ),
        ),
        ("`epoch_order`", *cells(lambda n: s(m[f"{n}.order.epoch_order_s"]))),
        (
            "`restore` / first batch after it",
            *cells(
                lambda n: f"{s(m[f'{n}.order.restore_s'])} / {s(m[f'{n}.order.first_batch_s'])}"
            ),
        ),
        (
            "random `get_batch(256)` warm, samples/s",
            *cells(lambda n: fmt(m[f"{n}.get_batch.samples_per_s"])),
        ),
        (
            "random `get_batch(256)` cold, samples/s",
            *cells(lambda n: fmt(m[f"{n}.get_batch.cold_samples_per_s"])),
        ),
        (
            "reader anonymous growth after reads",
            *cells(lambda n: f"{m[f'{n}.get_batch.anon_growth_mib']:.0f} MiB"),
        ),
        ("verify", *cells(lambda n: s(m[f"{n}.verify.verify_s"]))),
        (
            "1% append: plan / whole bake",
            *cells(lambda n: f"{s(m[f'{n}.append_plan.total_s'])} / {s(m[f'{n}.append_bake_s'])}"),
        ),
    ]
    return ("what", *[f"{n:,}" for n in sizes]), rows


PEER_LABELS = {
    "datakiln": "**datakiln**",
    "hf_datasets": "Hugging Face `datasets`",
    "webdataset": "WebDataset",
    "grain_arrayrecord": "Grain over ArrayRecord",
    "litdata": "LitData",
    "mosaic_streaming": "MosaicML Streaming",
}


def _peers(r: dict[str, Any]) -> Table:
    m, ratios = r["medians"], r["ratios"]
    names = [k.split(".", 1)[1] for k in m if k.startswith("bake.")]
    rows: Rows = []
    for name in names:
        cells: list[str] = [PEER_LABELS.get(name, name)]
        for kind in ("bake", "random", "epoch"):
            value = m.get(f"{kind}.{name}")
            ratio = 1.0 if name == "datakiln" else ratios.get(f"{kind}.{name}_vs_datakiln")
            cells.append("no random access" if value is None else f"{fmt(value)} ({_x(ratio)})")
        cells.append(f"{r['facts']['bytes_on_disk'][name] / 2**20:.1f} MiB")
        rows.append(cells)
    for name in r["facts"].get("skipped", {}):
        rows.append((PEER_LABELS.get(name, name), "skipped: see below", "", "", ""))
    n = _n(r, "bake.datakiln")
    header = (
        "library",
        f"bake, images/s (÷ datakiln), median of {n}",
        f"random batch of {r['args']['batch']}, samples/s",
        "shuffled epoch, samples/s",
        "on disk",
    )
    return header, rows


BUILDERS: dict[str, Builder] = {
    "bench_bake_images": _bake_images,
    "bench_layouts": _layouts,
    "bench_read": _read,
    "bench_scaling": _scaling,
    "bench_bake_text_audio": _text_audio,
    "bench_kernels_text_audio": _kernels,
    "bench_records": _records,
    "bench_records.cold": _records_cold,
    "bench_records.rss": _records_rss,
    "bench_records.speech": _records_speech,
    "bench_records.s3": _records_s3,
    "bench_remote": _remote,
    "bench_service": _service,
    "bench_imagenet.bake": _imagenet_bake,
    "bench_imagenet.disk": _imagenet_disk,
    "bench_imagenet.codecs": _imagenet_codecs,
    "bench_imagenet.reads": _imagenet_reads,
    "bench_imagenet.sweep": _imagenet_sweep,
    "bench_transforms": _transforms,
    "bench_scale": _scale,
    "bench_peers": _peers,
}


if __name__ == "__main__":
    sys.exit(main())
