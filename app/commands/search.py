"""search: the notes whose words match, best first, as /search answers them."""

from __future__ import annotations

import argparse
import html
import re
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.cli import command
from app.commands.read import _args, _print, reader
from app.queries import params, search
from app.queries.scope import EVERYTHING
from app.text import show_time, show_value

_MARK = re.compile(r"<mark>(.*?)</mark>")


def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("query", metavar="WORDS", help="the words to find (accents and case ignored)")
    p.add_argument("--limit", default="20", help="notes per page (1-100, default 20)")
    p.add_argument("--cursor", help="the next_cursor of the previous page")


def marked(snippet: str) -> str:
    """A snippet's HTML as rich markup: its text as text, its matches in bold."""
    pieces = _MARK.split(snippet)  # text, match, text, match, …
    return "".join(
        f"[bold reverse]{escape(html.unescape(p))}[/]" if i % 2 else escape(html.unescape(p))
        for i, p in enumerate(pieces)
    )


def _shown(value: Any) -> str:
    return "" if value is None else show_value(value)


def _show_results(console: Console, body: dict[str, Any]) -> None:
    table = Table("changed", "note", "type", "result", "text")
    for item in body["items"]:
        table.add_row(
            show_time(item["last_action_time"]), escape(item["note_id"]),
            escape(_shown(item["type"])), escape(_shown(item["result"])),
            marked(item["snippet"]),
        )  # fmt: skip
    console.print(table)
    if body["next_cursor"]:
        console.print(f"more: --cursor {body['next_cursor']}")


@command("search", "the live notes whose text holds every word, best first", _args(_search_args))
def search_command(args: argparse.Namespace) -> int:
    terms = search.query_terms(args.query)
    limit = params.limit(args.limit, 20, 100)
    cursor = search.decode(args.cursor)
    with reader(args, "search") as r:
        body = search.search_notes(r.views, EVERYTHING, terms, limit, cursor)
    return _print(args, body, _show_results)
