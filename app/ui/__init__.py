"""The inspector: HTML pages under /ui/, mounted by app.web.create_app with `add_routes(app)`.

A sub-application of its own (its middleware, templates and static files stay under /ui/);
its pages call the same query functions as the JSON API (app.queries), in the same query
pool, so they read either backend alike.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import aiohttp_jinja2
import jinja2
import structlog
from aiohttp import web

from app.config import Settings
from app.ui import admin, guard, pages, render
from app.ui.session import Signer

log = structlog.get_logger("notestore.ui")

STATIC = Path(__file__).parent / "static"


# The pages' icon (linked by base.html): without one, browsers ask for /favicon.ico, a 404.
ICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16"'
    b' rx="3" fill="#1f5fbf"/><path d="M4 4h8M4 8h8M4 12h5" stroke="#fff" stroke-width="2"/></svg>'
)


async def icon(request: web.Request) -> web.Response:
    return web.Response(
        body=ICON, content_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"}
    )


def signer_for(settings: Settings) -> Signer:
    """session_secret, or (not configured) a random one for this process (warn_unset says so)."""
    return Signer(settings.session_secret or secrets.token_bytes(32))


async def warn_unset(ui: web.Application) -> None:
    log.warning(
        "session_secret_not_configured",
        hint="the inspector signs its sessions with a random secret of this process: they end"
        " when serve restarts, and several serve instances do not share them; set"
        " session_secret in the config (notestore init writes one)",
    )


def ui_app(settings: Settings) -> web.Application:
    ui = web.Application(middlewares=[guard.guard])
    ui[guard.SIGNER] = signer_for(settings)
    if not settings.session_secret:
        ui.on_startup.append(warn_unset)
    env = aiohttp_jinja2.setup(
        ui,
        loader=jinja2.PackageLoader("app.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    render.install_filters(env)
    ui.router.add_get("/login", guard.login_form)
    ui.router.add_post("/login", guard.login)
    ui.router.add_post("/logout", guard.logout)
    ui.router.add_get("/", pages.home)
    ui.router.add_get("/notes/{note_id}", pages.note)
    ui.router.add_get("/note", pages.note_form)
    ui.router.add_get("/search", pages.search_results)
    ui.router.add_get("/mentions", pages.mentions_form)
    ui.router.add_get("/accounts/{account_id}/mentions", pages.mention_feed)
    ui.router.add_get("/quarantine", admin.quarantine)
    ui.router.add_post("/quarantine/{item_id}/replay", admin.replay)
    ui.router.add_get("/status", admin.status)
    ui.router.add_get("/favicon.svg", icon)
    ui.router.add_static("/static/", STATIC, name="static")
    return ui


def add_routes(app: web.Application) -> None:
    """Mount the inspector under /ui/."""
    from app.keys import SETTINGS

    app.add_subapp("/ui/", ui_app(app[SETTINGS]))
