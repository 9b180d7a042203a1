"""The inspector's reading pages: home, a note with its timeline, an account's mention feed."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web

from app.errors import BadRequest, Gone, NotFound, Unavailable
from app.keys import READER, RUNNER
from app.middleware import RETRY_AFTER_S
from app.queries import history, mentions, notes, params, recent, search
from app.ui.guard import see_other
from app.ui.render import page
from app.ui.session import PATH
from app.ui.timeline import timeline
from eventlog.dbapi import Connection
from projections.base import merchant_key

PAGE = 25


async def ready(request: web.Request, *views: str) -> None:
    """As the API: a view still being built is a 503 saying so."""
    runner, reader = request.config_dict[RUNNER], request.config_dict[READER]
    for name in views:
        if not await reader.call(runner.is_ready, name):
            raise Unavailable(f"the {name} view is being built; try again shortly", RETRY_AFTER_S)


def _cursor(request: web.Request) -> Any:
    return params.decode_cursor(request.query.get("cursor") or None)


async def home(request: web.Request) -> web.Response:
    scope = request["scope"]
    related = (request.query.get("related") or "").strip()
    cursor = _cursor(request)
    await ready(request, "notes")
    if related:
        related = params.entity_id(related, "related")

        def query(views: Connection, log: Connection) -> dict[str, Any]:
            return notes.related_notes(views, scope, related, PAGE, cursor)
    else:

        def query(views: Connection, log: Connection) -> dict[str, Any]:
            return recent.recent_notes(views, scope, PAGE, cursor)

    found = await request.config_dict[READER].query(query)
    return await page(request, "home.html", {"related": related, **found})


def _as_of(request: web.Request) -> float | None:
    """?as_of= (epoch or ISO, as the API), else ?when= from the date-and-time field (local time
    turned into UTC by static/time.js; read as UTC without JavaScript)."""
    value = request.query.get("as_of") or None
    if value is None and request.query.get("when"):
        value = request.query["when"]
    return params.as_of(value)


def _note_page(views: Connection, log: Connection, scope: Any, note_id: str,
               merchant: str | None, at: float | None) -> dict[str, Any]:  # fmt: skip
    """The note, its history and thread; a note known only from its comments (no event of the
    note itself has arrived) is shown with its history and thread and no state."""
    note: dict[str, Any] | None
    try:
        note = notes.get_note(views, scope, note_id, merchant)
        merchant = note["merchant_id"] or ""
    except NotFound:
        note = None  # its history says whether the note id is known at all (else 404)
    story = history.note_history(views, log, scope, note_id, merchant)
    if note is None and story["events"]:
        merchant = merchant_key(story["events"][0]["merchant_id"])
    then: dict[str, Any] | None = None
    if at is not None:
        try:
            then = notes.note_as_of(views, log, scope, note_id, at, merchant)
        except (NotFound, Gone):  # not yet, or every event until then erased: no state
            then = None
    return {
        "note_id": note_id,
        "note": note,
        "merchant": merchant,
        "at": at,
        "then": then,
        "timeline": timeline(story),
        "comments": notes.comment_thread(views, scope, note_id, True, merchant)["comments"],
    }


async def note(request: web.Request) -> web.Response:
    scope = request["scope"]
    note_id = params.entity_id(request.match_info["note_id"], "note_id")
    merchant = request.query.get("merchant_id")
    merchant = None if merchant is None else params.entity_id(merchant, "merchant_id")
    at = _as_of(request)
    await ready(request, "notes", "comments")
    found = await request.config_dict[READER].query(
        lambda views, log: _note_page(views, log, scope, note_id, merchant, at)
    )
    found["note_url"] = (
        f"{PATH}/notes/{quote(note_id, safe='')}?merchant_id={quote(found['merchant'], safe='')}"
    )
    return await page(request, "note.html", found)


async def note_form(request: web.Request) -> web.Response:
    """The home page's "open a note by its id": its page, whether or not the note is among
    those listed (a note known only from its comments never is)."""
    note_id = (request.query.get("id") or "").strip()
    if not note_id:
        raise BadRequest("name a note id")
    note_id = params.entity_id(note_id, "note id")
    return see_other(f"{PATH}/notes/{quote(note_id, safe='')}")


async def mentions_form(request: web.Request) -> web.Response:
    account = (request.query.get("account") or "").strip()
    if not account:
        raise BadRequest("name an account")
    account = params.entity_id(account, "account")
    return see_other(f"{PATH}/accounts/{quote(account, safe='')}/mentions")


async def mention_feed(request: web.Request) -> web.Response:
    scope = request["scope"]
    account = params.entity_id(request.match_info["account_id"], "account_id")
    cursor = _cursor(request)
    await ready(request, "mentions")
    found = await request.config_dict[READER].query(
        lambda views, log: mentions.mention_feed(views, scope, account, PAGE, cursor)
    )
    return await page(request, "mentions.html", {"account": account, **found})


async def search_results(request: web.Request) -> web.Response:
    """The API's search (app.queries.search), a page at a time; a query with no word to look
    for is shown back with the reason."""
    scope = request["scope"]
    q = request.query.get("q", "")
    try:
        terms = search.query_terms(q)
    except BadRequest as exc:
        return await page(request, "search.html", {"q": q, "problem": str(exc), "items": [],
                          "next_cursor": None}, status=400)  # fmt: skip
    cursor = search.decode(request.query.get("cursor") or None)
    await ready(request, "search")
    found = await request.config_dict[READER].query(
        lambda views, log: search.search_notes(views, scope, terms, PAGE, cursor)
    )
    return await page(request, "search.html", {"q": q, "problem": "", **found})
