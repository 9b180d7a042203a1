"""The query routes: authorise, check the view is ready, parse parameters, answer."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from app.errors import BadRequest, Unavailable
from app.keys import READER, RUNNER, SETTINGS
from app.middleware import RETRY_AFTER_S, json_response
from app.queries import history, mentions, notes, params
from app.queries.merchants import Ambiguous
from app.queries.scope import Scope, scope_for
from eventlog.db import LOG_FILE, connect
from projections.store import open_views


@dataclass
class Reader:
    """Read connections for the query routes (reads never wait on the writers in WAL)."""

    views: sqlite3.Connection
    log: sqlite3.Connection


async def open_reader(app: web.Application) -> AsyncIterator[None]:
    data_dir = app[SETTINGS].data_dir
    reader = Reader(open_views(data_dir), connect(data_dir / LOG_FILE, readonly=True))
    app[READER] = reader
    yield
    reader.views.close()
    reader.log.close()


def _scope(request: web.Request) -> Scope:
    return scope_for(request.app[SETTINGS], request.headers.get("Authorization"))


def _ready(request: web.Request, *views: str) -> None:
    runner = request.app[RUNNER]
    for name in views:
        if not runner.is_ready(name):
            raise Unavailable(f"the {name} view is being built; try again shortly", RETRY_AFTER_S)


def _answer(body: dict[str, Any]) -> web.Response:
    return json_response(body)


def _merchant(request: web.Request) -> str | None:
    value = request.query.get("merchant_id")
    return None if value is None else params.entity_id(value, "merchant_id")


def _entity_answer(query: Callable[..., dict[str, Any]], *args: Any) -> web.Response:
    """The answer about one (merchant, id) entity; 409 naming the merchants when ambiguous."""
    try:
        return _answer(query(*args))
    except Ambiguous as exc:
        return json_response({"error": str(exc), "merchants": exc.merchants}, status=409)


async def get_note(request: web.Request) -> web.Response:
    scope = _scope(request)
    note_id = params.entity_id(request.match_info["note_id"], "note_id")
    at = params.as_of(request.query.get("as_of"))
    merchant = _merchant(request)
    reader = request.app[READER]
    if at is not None:
        return _entity_answer(notes.note_as_of, reader.log, scope, note_id, at, merchant)
    _ready(request, "notes")
    return _entity_answer(notes.get_note, reader.views, scope, note_id, merchant)


async def get_history(request: web.Request) -> web.Response:
    scope = _scope(request)
    note_id = params.entity_id(request.match_info["note_id"], "note_id")
    merchant = _merchant(request)
    _ready(request, "comments")
    reader = request.app[READER]
    return _entity_answer(history.note_history, reader.views, reader.log, scope, note_id, merchant)


async def get_comments(request: web.Request) -> web.Response:
    scope = _scope(request)
    note_id = params.entity_id(request.match_info["note_id"], "note_id")
    include_deleted = params.boolean(request.query.get("include_deleted"), "include_deleted")
    merchant = _merchant(request)
    _ready(request, "notes", "comments")
    views = request.app[READER].views
    return _entity_answer(notes.comment_thread, views, scope, note_id, include_deleted, merchant)


async def get_related_notes(request: web.Request) -> web.Response:
    scope = _scope(request)
    related = request.query.get("related_to")
    if related is None:
        raise BadRequest("related_to is required: the id of a deal, profile, ticket or company")
    related = params.entity_id(related, "related_to")
    limit = params.limit(request.query.get("limit"), 50, 500)
    cursor = params.decode_cursor(request.query.get("cursor"))
    _ready(request, "notes")
    return _answer(notes.related_notes(request.app[READER].views, scope, related, limit, cursor))


async def get_events(request: web.Request) -> web.Response:
    scope = _scope(request)
    after = params.after(request.query.get("after"))
    limit = params.limit(request.query.get("limit"), 100, 1000)
    return _answer(history.log_page(request.app[READER].log, scope, after, limit))


async def get_mentions(request: web.Request) -> web.Response:
    scope = _scope(request)
    account_id = params.entity_id(request.match_info["account_id"], "account_id")
    limit = params.limit(request.query.get("limit"), 50, 500)
    cursor = params.decode_cursor(request.query.get("cursor"))
    _ready(request, "mentions")
    return _answer(
        mentions.mention_feed(request.app[READER].views, scope, account_id, limit, cursor)
    )


def add_routes(app: web.Application) -> None:
    app.cleanup_ctx.append(open_reader)
    app.router.add_get("/notes", get_related_notes)
    app.router.add_get("/notes/{note_id}", get_note)
    app.router.add_get("/notes/{note_id}/history", get_history)
    app.router.add_get("/notes/{note_id}/comments", get_comments)
    app.router.add_get("/events", get_events)
    app.router.add_get("/accounts/{account_id}/mentions", get_mentions)
