"""The documentation site builds with ``mkdocs build --strict``, and its generated pages
(the README, a page per command, the API reference) follow their sources."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import datakiln

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("mkdocs", reason="mkdocs is not installed: pip install -e '.[docs]'")
pytest.importorskip(
    "mkdocstrings", reason="mkdocstrings is not installed: pip install -e '.[docs]'"
)
pytest.importorskip("material", reason="mkdocs-material is not installed: pip install -e '.[docs]'")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # the theme's banner, not a warning
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if re.match(r"WARNING\s+-", line)]
    assert warnings == []
    return out


def _commands() -> dict[str, argparse.ArgumentParser]:
    from datakiln.cli import _parser

    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _text(html: str) -> str:
    """The text of a page's HTML, roughly: tags out, entities decoded."""
    import html as html_module

    return html_module.unescape(re.sub(r"<[^>]+>", "", html))


def test_every_command_has_a_page_with_its_help(site):
    from datakiln.cli import _parser

    for name, parser in {"": _parser(), **_commands()}.items():
        page = _text((site / "cli" / name / "index.html").read_text())
        usage = parser.format_usage().split()
        assert " ".join(usage) in " ".join(page.split()), name
        for action in parser._actions:  # every option is on the page
            for flag in action.option_strings:
                assert flag in page, f"{name}: {flag}"
    bake = (site / "cli" / "bake" / "index.html").read_text()
    assert 'href="../../reference/datakiln/#datakiln.bake"' in bake


def test_the_api_reference_documents_every_public_name(site):
    page = (site / "reference" / "datakiln" / "index.html").read_text()
    documented = set(re.findall(r'id="datakiln\.(\w+)"', page))
    assert set(datakiln.__all__) - documented == set()
    errors_page = (site / "reference" / "errors" / "index.html").read_text()
    assert 'id="datakiln.errors.ChecksumMismatchError"' in errors_page


def test_the_front_page_is_the_readme_with_working_links(site):
    page = (site / "index.html").read_text()
    readme = (ROOT / "README.md").read_text()
    first = readme.split("\n## ", 1)[0].splitlines()[2]  # the first sentence of the README
    assert " ".join(first.split()[:6]) in " ".join(_text(page).split())
    assert 'href="format/#compressed-image-fields"' in page
    assert 'href="docs/' not in page


def test_the_built_site_is_ignored_by_git():
    result = subprocess.run(
        ["git", "check-ignore", "-q", "site/index.html"], cwd=ROOT, capture_output=True
    )
    assert result.returncode == 0, "site/ must be in .gitignore"
