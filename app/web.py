"""The aiohttp application factory: nothing is opened until the app starts."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from app import receiver
from app.config import Settings
from app.keys import SETTINGS, WRITER
from app.middleware import errors_as_json
from eventlog.writer import GroupCommitWriter


async def healthz(request: web.Request) -> web.Response:
    writer = request.app[WRITER]
    if not writer.healthy:
        return web.json_response(
            {"status": "unavailable", "reasons": ["the log cannot commit"]}, status=503
        )
    return web.json_response({"status": "ok"})


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[errors_as_json], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings

    async def log_writer(app: web.Application) -> AsyncIterator[None]:
        app[WRITER] = GroupCommitWriter(settings.data_dir)
        yield
        app[WRITER].close()

    app.cleanup_ctx.append(log_writer)
    app.router.add_post("/webhooks/mobio", receiver.receive)
    app.router.add_get("/webhooks/mobio", receiver.online_check)
    app.router.add_get("/healthz", healthz)
    return app
