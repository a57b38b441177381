"""What every benchmark shares: timing, alternation, medians, machine facts and JSON results.

A benchmark builds a :class:`Recorder`, adds one figure per run and variant to it (measured by
:func:`alternate`, so a change in the machine's load hits every variant alike), names the
ratios it reports, and writes ``benchmarks/results/<bench>.json``: the command line, the
machine (with the load average before and after), the date, every run's figure, the medians
and the ratios. ``benchmarks/tables.py`` turns those files into BENCHMARKS.md's tables.

Two process helpers replace programs written as strings: :func:`spawn` runs a function of a
benchmark module in a fresh interpreter (its memory and imports are its own) and returns what
it returned, as JSON; :func:`require_env` re-executes the benchmark with environment variables
that must be set before a library is first imported (BLAS threads, XLA flags).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import importlib.metadata
import inspect
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
# Names another folder for the JSON results (device_check.sh keeps each platform's apart).
RESULTS_ENV = "DATAKILN_BENCH_RESULTS"
# The versions worth knowing when a figure moves (absent packages are left out).
PACKAGES = ("datakiln", "jax", "jaxlib", "numpy", "zarr", "pillow", "dask", "imagecodecs")
# Marks the line of a spawned child's stdout that carries its JSON answer.
_ANSWER = "@@harness-answer@@ "


def median(values: Iterable[float]) -> float:
    """The median of ``values`` (raises ``statistics.StatisticsError`` when empty)."""
    return statistics.median(list(values))


def seconds(fn: Callable[[], object]) -> float:
    """Wall seconds (``time.perf_counter``) of one call of ``fn``."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Wall seconds of one call of ``fn`` and what it returned."""
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def per_second(count: float, fn: Callable[[], object]) -> float:
    """``count`` over the wall seconds of one call of ``fn``: a throughput."""
    return count / seconds(fn)


def alternate(
    variants: Mapping[str, Callable[[], float]],
    runs: int,
    *,
    rotate: bool = False,
    warmup: bool = False,
) -> dict[str, list[float]]:
    """Each variant's figure per run, the variants taking turns (A B A B ...).

    Each callable does one run and returns its figure (a rate, or seconds). Taking turns puts
    any drift of a shared machine on every variant alike; ``rotate`` also moves the first
    variant of each run one along (A B C, B C A, ...), so no variant always follows the same
    one. ``warmup`` calls each variant once, untimed, first (compiles, fills caches).
    """
    names = list(variants)
    if warmup:
        for name in names:
            variants[name]()
    figures: dict[str, list[float]] = {name: [] for name in names}
    for run in range(runs):
        shift = run % len(names) if rotate else 0
        for name in names[shift:] + names[:shift]:
            figures[name].append(float(variants[name]()))
    return figures


def unit_of(name: str) -> str:
    """The unit a figure's name ends in: ``_per_s`` per second, ``_ms``, ``_s``, ``_mib``."""
    for suffix, unit in (("_per_s", "1/s"), ("_ms", "ms"), ("_s", "s"), ("_mib", "MiB")):
        if name.endswith(suffix):
            return unit
    return "count"


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    """HEAD of the checkout holding the benchmarks, ``+dirty`` when the library measured
    (``src/``, ``pyproject.toml``) differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "pyproject.toml"],
            cwd=HERE,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """The installed version of each of ``names`` (absent packages are left out)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def machine() -> dict[str, Any]:
    """What a figure depends on: CPUs, RAM, load, Python and library versions, git commit."""
    versions = package_versions(PACKAGES)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "ram_gib": _ram_gib(),
        "platform": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "versions": versions,
        "git_commit": _git_commit(),
    }


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars, paths and tuples made JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and value != value:  # NaN: JSON has no such number
        return None
    return value


class Recorder:
    """One benchmark invocation's figures, written as ``results/<bench>.json``.

    Figures are added per run (``add``/``extend``), each name with its unit; medians are
    computed on ``write``. Ratios are declared by name as quotients of two medians. Anything
    that is not a per-run figure (sizes, settings, memory, a one-off measurement) goes to
    ``facts``. The load average is taken when the recorder is made and again on ``write``.
    """

    def __init__(self, bench: str, args: argparse.Namespace | None = None) -> None:
        self.bench = bench
        self.args = {} if args is None else _plain(vars(args))
        self.started = datetime.datetime.now(datetime.UTC)
        self.load_before = load_average()
        self.runs: dict[str, list[float]] = {}
        self.units: dict[str, str] = {}
        self.ratios: dict[str, tuple[str, str]] = {}
        self.facts: dict[str, Any] = {}

    def add(self, name: str, value: float, unit: str) -> None:
        """Append one run's ``value`` of figure ``name`` (in ``unit``)."""
        self.runs.setdefault(name, []).append(float(value))
        self.units[name] = unit

    def extend(self, figures: Mapping[str, Iterable[float]], unit: str, prefix: str = "") -> None:
        """Append every run of several figures of one unit (as :func:`alternate` returns)."""
        for name, values in figures.items():
            for value in values:
                self.add(prefix + name, value, unit)

    def ratio(self, name: str, numerator: str, denominator: str) -> None:
        """Report ``median(numerator) / median(denominator)`` as ``name``."""
        self.ratios[name] = (numerator, denominator)

    def medians(self) -> dict[str, float]:
        return {name: median(values) for name, values in self.runs.items()}

    def to_dict(self) -> dict[str, Any]:
        medians = self.medians()
        ratios = {
            name: medians[a] / medians[b]
            for name, (a, b) in self.ratios.items()
            if a in medians and b in medians and medians[b]
        }
        return _plain(
            {
                "bench": self.bench,
                "command": shlex.join(["python", *_display_argv()]),
                "args": self.args,
                "date": self.started.isoformat(timespec="seconds"),
                "duration_s": round(
                    (datetime.datetime.now(datetime.UTC) - self.started).total_seconds(), 1
                ),
                "machine": machine()
                | {"load_before": self.load_before, "load_after": load_average()},
                "units": self.units,
                "runs": self.runs,
                "medians": medians,
                "ratios": ratios,
                # the same quotients run by run (runs of two variants taken in turns pair up)
                "paired_ratios": {
                    name: [x / y for x, y in zip(self.runs[a], self.runs[b], strict=True)]
                    for name, (a, b) in self.ratios.items()
                    if a in self.runs
                    and b in self.runs
                    and len(self.runs[a]) == len(self.runs[b])
                    and all(self.runs[b])
                },
                "facts": self.facts,
            }
        )

    def write(self, directory: Path | None = None, also: str | None = None) -> Path:
        """Write (overwrite) ``<directory>/<bench>.json`` and print where; returns the path.

        ``directory`` defaults to ``$DATAKILN_BENCH_RESULTS``, else ``benchmarks/results``.
        ``also`` names a second file to write the same record to (a benchmark's ``--json``).
        """
        if directory is None:
            directory = Path(os.environ.get(RESULTS_ENV, RESULTS_DIR))
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.bench}.json"
        record = self.to_dict()
        tmp = path.with_suffix(".json.partial")
        tmp.write_text(_json_text(record))
        tmp.replace(path)
        if also:
            Path(also).write_text(_json_text(record))
        print(json.dumps({"medians": record["medians"], "ratios": record["ratios"]}, indent=1))
        print(f"wrote {path}")
        return path


def _json_text(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=1, allow_nan=False) + "\n"


def _display_argv() -> list[str]:
    """``sys.argv`` with the script named relative to the repository, as BENCHMARKS.md does."""
    argv = list(sys.argv)
    if argv and argv[0]:
        script = Path(argv[0]).resolve()
        try:
            argv[0] = str(script.relative_to(HERE.parent))
        except ValueError:
            argv[0] = str(script)
    return argv


def require_env(env: Mapping[str, str]) -> None:
    """Make sure this process started with ``env`` set; re-execute it with ``env`` if not.

    For settings that a library reads once, when first imported (``OPENBLAS_NUM_THREADS``,
    ``XLA_FLAGS``): the benchmark calls this first thing in ``main()``, and the process it
    becomes imports everything afresh with the variables in place.
    """
    if all(os.environ.get(key) == value for key, value in env.items()):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **env})


def spawn(
    fn: Callable[..., Any],
    *args: Any,
    env: Mapping[str, str] | None = None,
    prefix: tuple[str, ...] = (),
) -> Any:
    """``fn(*args)`` run in a fresh interpreter; returns its JSON-able result.

    ``fn`` must be a module-level function of a file in ``benchmarks/`` and ``args`` JSON
    types. The child has only what it imports (its peak RSS is its own), runs with ``env``
    when given, and under ``prefix`` (``("taskset", "-c", "0")``) when given. A failing child
    raises ``RuntimeError`` carrying its stderr.
    """
    module = Path(inspect.getfile(fn)).resolve()
    command = [
        *prefix,
        sys.executable,
        str(HERE / "harness.py"),
        "call",
        str(module),
        fn.__name__,
        json.dumps(_plain(list(args))),
    ]
    child = subprocess.run(
        command, capture_output=True, text=True, env=None if env is None else dict(env)
    )
    if child.returncode:
        raise RuntimeError(
            f"{module.name}:{fn.__name__} failed in its own process:\n{child.stderr}"
        )
    for line in reversed(child.stdout.splitlines()):
        if line.startswith(_ANSWER):
            return json.loads(line.removeprefix(_ANSWER))
    raise RuntimeError(f"{module.name}:{fn.__name__} printed no answer:\n{child.stdout[-2000:]}")


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server on loopback for the block (as the tests start it): yields its URL."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _call(module_path: str, function: str, args_json: str) -> None:
    """The child side of :func:`spawn`: import the module by path, call, print the answer."""
    path = Path(module_path)
    sys.path.insert(0, str(path.parent))
    module = importlib.import_module(path.stem)
    result = getattr(module, function)(*json.loads(args_json))
    print(_ANSWER + json.dumps(_plain(result)), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "call":
        raise SystemExit("usage: harness.py call MODULE_PATH FUNCTION ARGS_JSON (see spawn)")
    _call(*sys.argv[2:])
