"""note, history, comments, mentions: the query answers in the terminal, from the log and views."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.cli import command, settings_of
from app.commands.views import open_existing_log
from app.errors import NotestoreError
from app.queries import history, mentions, notes, params
from app.queries.scope import EVERYTHING
from app.text import html_to_text, show_time, show_value
from eventlog.dbapi import Connection
from projections.registry import all_projectors
from projections.store import live_row


@dataclass
class Reader:
    views: Connection
    log: Connection


def _current(views: Connection, name: str) -> bool:
    """The view is built, by this version of its projector."""
    row = live_row(views, name)
    return row is not None and row.version == VERSIONS[name]


VERSIONS = {p.name: p.version for p in all_projectors()}


@contextmanager
def reader(args: argparse.Namespace, *views: str) -> Iterator[Reader]:
    """The log and the views of the configured backend (SQLite files or PostgreSQL)."""
    settings = settings_of(args)
    log = open_existing_log(settings)
    try:
        view_conn = settings.storage.views()
    except BaseException:
        log.close()
        raise
    try:
        for name in views:
            if not _current(view_conn, name):
                hint = "run `notestore rebuild` or `notestore serve`"
                raise NotestoreError(f"the {name} view is not built (by this version) yet: {hint}")
        yield Reader(view_conn, log)
    finally:
        view_conn.close()
        log.close()


def _print(
    args: argparse.Namespace,
    body: dict[str, Any],
    readable: Callable[[Console, dict[str, Any]], None],
) -> int:
    if args.json:
        print(json.dumps(body, indent=2, ensure_ascii=False))
    else:
        readable(Console(), body)
    return 0


def _args(
    *extra: Callable[[argparse.ArgumentParser], None],
) -> Callable[[argparse.ArgumentParser], None]:
    def configure(p: argparse.ArgumentParser) -> None:
        for add in extra:
            add(p)
        p.add_argument("--json", action="store_true", help="print the same JSON as the HTTP route")

    return configure


def _note_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("note_id", metavar="NOTE_ID")
    p.add_argument(
        "--merchant", metavar="M", help="the merchant whose note this is, when several hold the id"
    )


def _merchant(args: argparse.Namespace) -> str | None:
    return None if args.merchant is None else params.entity_id(args.merchant, "--merchant")


def _as_of_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--as-of", metavar="T", help="fold only events up to T (epoch seconds or ISO-8601)"
    )


def _show_note(console: Console, note: dict[str, Any]) -> None:
    table = Table("field", "value", show_header=False, title=f"note {escape(note['note_id'])}")
    for key, value in note.items():
        if key == "note_id":
            continue
        shown = show_time(value) if key.endswith("_time") else show_value(value)
        table.add_row(key, escape(shown))
    console.print(table)


@command("note", "a note as it is now, or as of a time", _args(_note_arg, _as_of_arg))
def note(args: argparse.Namespace) -> int:
    note_id = params.entity_id(args.note_id, "NOTE_ID")
    at = params.as_of(args.as_of)
    with reader(args, *(() if at is not None else ("notes",))) as r:
        built = r.views if _current(r.views, "notes") else None  # it knows erased notes
        body = (
            notes.note_as_of(built, r.log, EVERYTHING, note_id, at, _merchant(args))
            if at is not None
            else notes.get_note(r.views, EVERYTHING, note_id, _merchant(args))
        )
    return _print(args, body, _show_note)


def describe_change(item: dict[str, Any]) -> list[str]:
    """One line per added, changed or removed value of a diff item."""
    key = item.get("field_key", "?")
    lines = [
        f"{key}: {show_value(c.get('from'))} → {show_value(c.get('to'))}"
        for c in item.get("change") or ()
        if isinstance(c, dict)
    ]
    lines += [f"{key}: + {show_value(v)}" for v in item.get("add") or () if v not in ([], None)]
    lines += [f"{key}: − {show_value(v)}" for v in item.get("remove") or () if v not in ([], None)]
    return lines


def _show_history(console: Console, body: dict[str, Any]) -> None:
    table = Table(
        "time", "actor", "event", "changes", title=f"history of note {escape(body['note_id'])}"
    )
    for event in body["events"]:
        changes = [
            line
            for item in event.get("changes") or ()
            if isinstance(item, dict)
            for line in describe_change(item)
        ]
        if event.get("erased"):
            changes = ["(erased)"]
        table.add_row(
            show_time(event["action_time"]), escape(str(event.get("actor") or "")),
            escape(f"{event['event_type']} {event['entity_id'] or ''}"), escape("\n".join(changes)),
        )  # fmt: skip
    console.print(table)


@command("history", "every event about a note and its comments, as a timeline", _args(_note_arg))
def note_history(args: argparse.Namespace) -> int:
    note_id = params.entity_id(args.note_id, "NOTE_ID")
    with reader(args, "comments") as r:
        body = history.note_history(r.views, r.log, EVERYTHING, note_id, _merchant(args))
    return _print(args, body, _show_history)


def _include_deleted_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--include-deleted", action="store_true", help="list deleted comments too")


def _show_comments(console: Console, body: dict[str, Any]) -> None:
    table = Table(
        "created", "by", "status", "text", title=f"comments on note {escape(body['note_id'])}"
    )
    for c in body["comments"]:
        status = f"{c['status'] or ''}{' (deleted)' if c['deleted'] else ''}"
        table.add_row(
            show_time(c["created_time"]),
            escape(str(c["created_by"] or "")),
            status,
            escape(html_to_text(c["description"])),
        )
    console.print(table)


@command("comments", "a note's comment thread", _args(_note_arg, _include_deleted_arg))
def comments(args: argparse.Namespace) -> int:
    note_id = params.entity_id(args.note_id, "NOTE_ID")
    with reader(args, "notes", "comments") as r:
        body = notes.comment_thread(
            r.views, EVERYTHING, note_id, args.include_deleted, _merchant(args)
        )
    return _print(args, body, _show_comments)


def _feed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("account_id", metavar="ACCOUNT_ID")
    p.add_argument("--limit", default="50", help="items per page (1-500, default 50)")
    p.add_argument("--cursor", help="the next_cursor of the previous page")


def _show_feed(console: Console, body: dict[str, Any]) -> None:
    table = Table("mentioned", "note", "type", "source", "text")
    for item in body["items"]:
        text = escape(html_to_text(item["description"]))
        kind, source = str(item["type"] or ""), str(item["source"] or "")
        table.add_row(show_time(item["mentioned_at"]), item["note_id"], kind, source, text)
    console.print(table)
    if body["next_cursor"]:
        console.print(f"more: --cursor {body['next_cursor']}")


@command("mentions", "the notes that mention an account now, newest first", _args(_feed_args))
def mention_feed(args: argparse.Namespace) -> int:
    account_id = params.entity_id(args.account_id, "ACCOUNT_ID")
    limit = params.limit(args.limit, 50, 500)
    cursor = params.decode_cursor(args.cursor)
    with reader(args, "mentions") as r:
        body = mentions.mention_feed(r.views, EVERYTHING, account_id, limit, cursor)
    return _print(args, body, _show_feed)
