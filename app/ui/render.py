"""Rendering a page: the template is filled in the query pool, never on the event loop."""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
import jinja2
from aiohttp import web

from app.keys import READER
from app.ui.sanitize import safe_html
from app.ui.timeline import shown


def iso(epoch: Any) -> str:
    """Epoch seconds as UTC ISO-8601 (what <time datetime> holds; static/time.js shows it in
    the viewer's zone); '' for what is not a time."""
    if isinstance(epoch, bool) or not isinstance(epoch, int | float):
        return ""
    try:
        moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return ""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def readable(epoch: Any) -> str:
    """The same time as text for readers without JavaScript: UTC, to the second."""
    text = iso(epoch)
    return f"{text[:10]} {text[11:19]} UTC" if text else "—"


def related_records(value: Any) -> list[str]:
    """related_to as "kind: id" lines: a dict of id lists (Mobio's shape), else its elements."""
    if isinstance(value, dict):
        return [
            f"{kind.removesuffix('_ids')}: {shown(one)}"
            for kind, ids in value.items()
            for one in (ids if isinstance(ids, list) else [ids])
        ]
    if isinstance(value, list):
        return [shown(one) for one in value]
    return [] if value is None else [shown(value)]


def install_filters(env: jinja2.Environment) -> None:
    env.filters.update(
        safe_html=safe_html, shown=shown, related_records=related_records,
        iso=iso, readable=readable,
        q=lambda value: quote(str(value), safe=""),
    )  # fmt: skip


async def page(
    request: web.Request, template: str, context: dict[str, Any], status: int = 200
) -> web.Response:
    env = aiohttp_jinja2.get_env(request.app)
    context = {
        **context,
        "csrf": request.get("csrf", ""),
        "signed_in": "scope" in request,
        "everything": request.get("scope") is not None and request["scope"].merchants is None,
        "path": request.path_qs,
    }
    html = await request.config_dict[READER].call(env.get_template(template).render, context)
    return web.Response(text=html, status=status, content_type="text/html")
