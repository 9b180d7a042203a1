"""The inspector's operator pages: quarantine with replay ("*" tokens only), and status."""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from typing import Any

from aiohttp import web

from app.api import UNAVAILABLE_ERRORS, UNREADABLE
from app.errors import Forbidden, NotFound, Unavailable
from app.keys import READER, RUNNER, SETTINGS
from app.middleware import RETRY_AFTER_S
from app.queries import activity, params
from app.queries import quarantine as held
from app.ui import chart
from app.ui.guard import see_other
from app.ui.render import page
from app.ui.session import PATH
from eventlog.replay import held_items
from eventlog.replay import replay as replay_items

PAGE = 25


def _everything(request: web.Request) -> None:
    if request["scope"].merchants is not None:
        raise Forbidden('quarantine is shown only to tokens that read every merchant ("*")')


def readable_payload(payload: str) -> str:
    """The held payload, indented when it is JSON, else as it came."""
    try:
        return json.dumps(json.loads(payload), indent=2, ensure_ascii=False, sort_keys=True)
    except ValueError:
        return payload


async def quarantine(request: web.Request) -> web.Response:
    _everything(request)
    before = request.query.get("before")
    start = None if before is None else params.after(before)
    found = await request.config_dict[READER].query(
        lambda views, log: held.quarantined(log, PAGE, start)
    )
    for item in found["items"]:
        item["readable"] = readable_payload(item["payload"])
    replayed = request.query.get("replayed")
    return await page(request, "quarantine.html", {**found, "replayed": replayed})


def _replay(settings: Any, item_id: int) -> dict[str, int]:
    from app.commands.operations import open_log_writer  # (app.commands imports app.web)

    conn = open_log_writer(settings)
    try:
        return replay_items(conn, held_items(conn, [item_id]), settings.merchants_of)
    finally:
        conn.close()


async def replay(request: web.Request) -> web.StreamResponse:
    _everything(request)
    raw = request.match_info["item_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound("no such quarantine item")
    settings = request.config_dict[SETTINGS]
    counts = await asyncio.to_thread(_replay, settings, int(raw))
    request.config_dict[RUNNER].notify(0)  # projectors in this process: look at the log now
    outcome = ",".join(sorted(counts)) or "not_held"
    return see_other(f"{PATH}/quarantine?replayed={raw}&outcome={outcome}#item-{raw}")


def today_start(now: float) -> float:
    """The start of the current UTC day."""
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


async def status(request: web.Request) -> web.Response:
    scope, settings = request["scope"], request.config_dict[SETTINGS]
    reader = request.config_dict[READER]
    start = today_start(time.time())
    from app.commands.views import gather_status  # (app.commands imports app.web)

    try:  # new connections of its own: the database unreachable is a 503, as for the queries
        report = await reader.call(gather_status, settings)
    except UNAVAILABLE_ERRORS:
        raise Unavailable(UNREADABLE, RETRY_AFTER_S) from None
    per_day = await reader.query(lambda views, log: activity.events_per_day(log, scope, start))
    return await page(request, "status.html", {
        "report": report,
        "chart": chart.bars(per_day, start),
    })  # fmt: skip
