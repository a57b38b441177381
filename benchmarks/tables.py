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


def _bake_images(r: dict[str, Any]) -> Table:
    labels = {
        "pillow_decode": "Pillow decode only (open, convert RGB, asarray), one thread",
        "pillow_draft": f"Pillow `draft(({r['facts']['size']}, {r['facts']['size']}))` decode "
        "only, one thread",
        "bake": "**`datakiln.bake`** (fetch, decode, resize kernel, Zarr + Parquet, markers, "
        "manifest)",
    }
    n = len(r["runs"]["bake"])
    rows: Rows = [
        (label, fmt(r["medians"][k]), runs_text(r["runs"][k])) for k, label in labels.items()
    ]
    rows.append(("bake ÷ draft decode", f"**{r['ratios']['bake_vs_draft']:.2f}×**", ""))
    rows.append(("bake ÷ plain decode", f"{r['ratios']['bake_vs_decode']:.2f}×", ""))
    return ("what", f"images/s (median of {n})", "all runs"), rows


BUILDERS: dict[str, Builder] = {
    "bench_bake_images": _bake_images,
}


if __name__ == "__main__":
    sys.exit(main())
