"""The query routes: authorise, check the view is ready, parse parameters, answer."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg
from aiohttp import web

from app.errors import BadRequest, Unavailable
from app.keys import READER, RUNNER, SETTINGS
from app.middleware import RETRY_AFTER_S, json_response
from app.queries import history, mentions, notes, params, search
from app.queries.merchants import Ambiguous
from app.queries.scope import Scope, scope_for
from eventlog.dbapi import DATABASE_ERRORS, Connection, is_broken
from projections.storage import Storage

T = TypeVar("T")


QUERY_THREADS = 4
UNREADABLE = "the database cannot be read right now; try again shortly"


# A database that cannot be reached or read now (a PostgreSQL server restarting, SQLite
# locked past its timeout): the query is answered 503, and the connections opened again.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    sqlite3.OperationalError,
    psycopg.OperationalError,
)


class Reader:
    """Runs the (synchronous) queries in a small thread pool, off the event loop, so a slow
    query never delays a webhook's answer. Each pool thread has connections of its own
    (reads never wait on the writers in WAL); no connection is used by two threads."""

    def __init__(self, storage: Storage, threads: int = QUERY_THREADS) -> None:
        self.storage = storage
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="query")
        self._local = threading.local()
        self._opened: list[tuple[Connection, Connection]] = []
        self._lock = threading.Lock()

    def connections(self) -> tuple[Connection, Connection]:
        """This thread's (views, log) connections, opened on first use."""
        pair: tuple[Connection, Connection] | None = getattr(self._local, "pair", None)
        if pair is None:
            views = self.storage.views()
            try:
                pair = (views, self.storage.log_reader())
            except BaseException:
                views.close()
                raise
            self._local.pair = pair
            with self._lock:
                self._opened.append(pair)
        return pair

    def _forget(self, pair: tuple[Connection, Connection]) -> None:
        """Close this thread's connections; the next query opens new ones."""
        self._local.pair = None
        with self._lock:
            if pair in self._opened:
                self._opened.remove(pair)
        for conn in pair:
            with contextlib.suppress(*DATABASE_ERRORS):
                conn.close()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) in the pool."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def query(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(views, log, *args) in the pool, with that thread's connections."""

        def run() -> T:
            for attempt in (1, 2):
                try:
                    pair = self.connections()
                except UNAVAILABLE_ERRORS:
                    raise Unavailable(UNREADABLE, RETRY_AFTER_S) from None
                try:
                    return fn(*pair, *args)
                except psycopg.DataError:  # a value PostgreSQL cannot take (params.py refuses
                    # those it knows of): the request's fault, never a 500
                    raise BadRequest("a value in this request cannot be looked up") from None
                except UNAVAILABLE_ERRORS:
                    if not any(is_broken(conn) for conn in pair):
                        raise Unavailable(UNREADABLE, RETRY_AFTER_S) from None
                    # the server dropped them (a restart): a read is safe to run again
                    self._forget(pair)
                    if attempt == 2:
                        raise Unavailable(UNREADABLE, RETRY_AFTER_S) from None
            raise AssertionError("unreachable")

        return await self.call(run)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        with self._lock:
            opened, self._opened = self._opened, []
        for views, log in opened:
            views.close()
            log.close()


async def open_reader(app: web.Application) -> AsyncIterator[None]:
    reader = Reader(app[SETTINGS].storage)
    app[READER] = reader
    yield
    await asyncio.to_thread(reader.close)


def _scope(request: web.Request) -> Scope:
    return scope_for(request.app[SETTINGS], request.headers.get("Authorization"))


async def _ready(request: web.Request, *views: str) -> None:
    runner = request.app[RUNNER]
    for name in views:
        # off the event loop: until a view is ready, asking reads the database
        if not await request.app[READER].call(runner.is_ready, name):
            raise Unavailable(f"the {name} view is being built; try again shortly", RETRY_AFTER_S)


def _answer(body: dict[str, Any]) -> web.Response:
    return json_response(body)


def _merchant(request: web.Request) -> str | None:
    value = request.query.get("merchant_id")
    return None if value is None else params.entity_id(value, "merchant_id")


async def _entity_answer(request: web.Request, query: Callable[..., Any]) -> web.Response:
    """The answer about one (merchant, id) entity; 409 naming the merchants when ambiguous.

    `query(views, log)` runs in the query pool (Reader)."""
    try:
        return _answer(await request.app[READER].query(query))
    except Ambiguous as exc:
        return json_response({"error": str(exc), "merchants": exc.merchants}, status=409)


async def get_note(request: web.Request) -> web.Response:
    scope = _scope(request)
    note_id = params.entity_id(request.match_info["note_id"], "note_id")
    at = params.as_of(request.query.get("as_of"))
    merchant = _merchant(request)
    if at is not None:  # from the log; the notes view too once built (it knows erased notes)
        built = await request.app[READER].call(request.app[RUNNER].is_ready, "notes")
        return await _entity_answer(
            request,
            lambda views, log: notes.note_as_of(
                views if built else None, log, scope, note_id, at, merchant
            ),
        )
    await _ready(request, "notes")
    return await _entity_answer(
        request, lambda views, log: notes.get_note(views, scope, note_id, merchant)
    )


async def get_history(request: web.Request) -> web.Response:
    scope = _scope(request)
    note_id = params.entity_id(request.match_info["note_id"], "note_id")
    merchant = _merchant(request)
    await _ready(request, "comments")
    return await _entity_answer(
        request, lambda views, log: history.note_history(views, log, scope, note_id, merchant)
    )


async def get_comments(request: web.Request) -> web.Response:
    scope = _scope(request)
    note_id = params.entity_id(request.match_info["note_id"], "note_id")
    include_deleted = params.boolean(request.query.get("include_deleted"), "include_deleted")
    merchant = _merchant(request)
    await _ready(request, "notes", "comments")
    return await _entity_answer(
        request,
        lambda views, log: notes.comment_thread(views, scope, note_id, include_deleted, merchant),
    )


async def get_related_notes(request: web.Request) -> web.Response:
    scope = _scope(request)
    related = request.query.get("related_to")
    if related is None:
        raise BadRequest("related_to is required: the id of a deal, profile, ticket or company")
    related = params.entity_id(related, "related_to")
    limit = params.limit(request.query.get("limit"), 50, 500)
    cursor = params.decode_cursor(request.query.get("cursor"))
    await _ready(request, "notes")
    return _answer(
        await request.app[READER].query(
            lambda views, log: notes.related_notes(views, scope, related, limit, cursor)
        )
    )


async def get_events(request: web.Request) -> web.Response:
    scope = _scope(request)
    after = params.after(request.query.get("after"))
    limit = params.limit(request.query.get("limit"), 100, 1000)
    return _answer(
        await request.app[READER].query(
            lambda views, log: history.log_page(log, scope, after, limit)
        )
    )


async def get_mentions(request: web.Request) -> web.Response:
    scope = _scope(request)
    account_id = params.entity_id(request.match_info["account_id"], "account_id")
    limit = params.limit(request.query.get("limit"), 50, 500)
    cursor = params.decode_cursor(request.query.get("cursor"))
    await _ready(request, "mentions")
    return _answer(
        await request.app[READER].query(
            lambda views, log: mentions.mention_feed(views, scope, account_id, limit, cursor)
        )
    )


async def get_search(request: web.Request) -> web.Response:
    scope = _scope(request)
    terms = search.query_terms(request.query.get("q"))
    limit = params.limit(request.query.get("limit"), 20, 100)
    cursor = search.decode(request.query.get("cursor"))
    await _ready(request, "search")
    return _answer(
        await request.app[READER].query(
            lambda views, log: search.search_notes(views, scope, terms, limit, cursor)
        )
    )


def add_routes(app: web.Application) -> None:
    app.cleanup_ctx.append(open_reader)
    app.router.add_get("/notes", get_related_notes)
    app.router.add_get("/notes/{note_id}", get_note)
    app.router.add_get("/notes/{note_id}/history", get_history)
    app.router.add_get("/notes/{note_id}/comments", get_comments)
    app.router.add_get("/events", get_events)
    app.router.add_get("/accounts/{account_id}/mentions", get_mentions)
    app.router.add_get("/search", get_search)
