"""mkdocs hooks: pages made at build time from their sources, so they cannot go stale.

* ``index.md`` is the README, its links rewritten for the site (``docs/x.md`` is ``x.md``
  there; a link to another file of the repository becomes its plain text).
* ``cli/<command>.md`` is ``datakiln <command> --help`` for every command the parser has,
  and ``cli/index.md`` is ``datakiln --help``; the nav's ``Commands`` section lists them.

Wired in by ``hooks:`` in ``mkdocs.yml``.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
# Help is wrapped to this many columns whatever the terminal building the site is.
HELP_COLUMNS = "100"
# The nav section the command pages fill.
COMMANDS_SECTION = "Commands"
_LINK = re.compile(r"\[([^\]]+)\]\(([^)#\s]+)(#[^)\s]*)?\)")


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    from datakiln.cli import _parser

    parser = _parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {"": parser, **action.choices}


def _help(parser: argparse.ArgumentParser) -> str:
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        return parser.format_help()
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


def _function_link(function: str) -> str:
    return f"[`{function}`](../reference/datakiln.md#{function})"


def command_page(name: str, parser: argparse.ArgumentParser) -> str:
    """The page of ``datakiln <name>`` (``name`` empty: the command itself)."""
    from datakiln.cli import FUNCTIONS

    title = f"datakiln {name}".strip()
    if not name:
        intro = (
            "Every command, with its options and an example. These are also functions that "
            "return what the command prints: "
            + ", ".join(_function_link(f) for f in FUNCTIONS.values())
            + "."
        )
    elif name in FUNCTIONS:
        intro = (
            f"`{title} --help` prints this. In Python: {_function_link(FUNCTIONS[name])}; "
            "`--json` prints what it returns."
        )
    else:
        intro = f"`{title} --help` prints this."
    return f"# `{title}`\n\n{intro}\n\n```text\n{_help(parser).rstrip()}\n```\n"


def _site_link(match: re.Match[str]) -> str:
    text, target, anchor = match.group(1), match.group(2), match.group(3) or ""
    if "://" in target:
        return match.group(0)
    if target.startswith("docs/"):
        return f"[{text}]({target.removeprefix('docs/')}{anchor})"
    return text  # another file of the repository: not part of the site


def readme_page() -> str:
    """The README with its links made to work on the site."""
    return _LINK.sub(_site_link, (ROOT / "README.md").read_text(encoding="utf-8"))


def on_config(config: MkDocsConfig, **kwargs: Any) -> MkDocsConfig:
    """Fill the nav's ``Commands`` section with a page per command."""
    commands = [name for name in _subcommands() if name]
    pages = [{"Overview": "cli/index.md"}, *({n: f"cli/{n}.md"} for n in commands)]
    for item in config.nav or []:
        if isinstance(item, dict) and COMMANDS_SECTION in item:
            item[COMMANDS_SECTION] = pages
    return config


def on_files(files: Files, config: MkDocsConfig, **kwargs: Any) -> Files:
    """Add the pages made from their sources: the README and the command pages."""
    files.append(File.generated(config, "index.md", content=readme_page()))
    for name, parser in _subcommands().items():
        path = f"cli/{name or 'index'}.md"
        files.append(File.generated(config, path, content=command_page(name, parser)))
    return files
