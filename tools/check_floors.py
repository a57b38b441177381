"""Install every core dependency at the lowest version pyproject.toml allows, then run tests.

    python tools/check_floors.py --venv /tmp/floors [pytest arguments]

A floor that the code outgrew (an API that appeared later) fails here, not on a user's
machine. jaxlib is pinned with jax. The default tests are those of the bake, the cache and
the reader; pass pytest arguments to choose others.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TESTS = [
    "tests/etl/kernels/test_image.py",
    "tests/etl/test_bake.py",
    "tests/etl/test_records.py",
    "tests/etl/test_object_stores.py",
    "tests/etl/test_incremental.py",
    "tests/cache",
    "tests/datasets",
    "tests/readers",
    "tests/writers",
]


def floors(requirements: list[str]) -> list[str]:
    """Pin each ``name>=x`` to ``name==x.*``, the floor's own release series.

    ``imagecodecs>=2024.9`` names no release ``2024.9`` itself. Markers are dropped, other
    specifiers kept as they are.
    """
    pinned = []
    for requirement in requirements:
        spec = requirement.split(";", 1)[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([^,\s]+)(,.*)?", spec)
        if not match:
            pinned.append(spec)
            continue
        name, version = match.group(1), match.group(2)
        pinned.append(f"{name}=={version}.*")
        if name == "jax":
            pinned.append(f"jaxlib=={version}.*")
        if name == "fsspec":  # s3fs releases in step with fsspec and would upgrade it
            pinned.append(f"s3fs=={version}.*")
    return pinned


def main() -> int:
    """Build the venv at the floors, install datakiln without dependencies, run pytest."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=Path("/tmp/datakiln-floors"))
    args, pytest_args = parser.parse_known_args()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = floors(project["project"]["dependencies"])
    python = args.venv / "bin" / "python"
    if not python.exists():
        venv.create(args.venv, with_pip=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, *pins], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)
    subprocess.run([*pip, "pytest>=8", "hypothesis>=6.100", "moto[server]>=5"], check=True)
    print("floors:", " ".join(pins), flush=True)
    tests = pytest_args or DEFAULT_TESTS
    return subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=ROOT
    ).returncode


if __name__ == "__main__":
    sys.exit(main())
