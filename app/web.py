"""The aiohttp application factory: nothing is opened until the app starts."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from aiohttp import web

from app import api, metrics, openapi, receiver, spooling, ui
from app.config import Settings
from app.keys import METRICS, READER, RUNNER, SETTINGS, WRITER
from app.middleware import (
    PROTOCOL_LOG,
    RETRY_AFTER_S,
    errors_as_json,
    install_parser_error_handler,
)
from app.views_monitor import ProcessMonitor
from eventlog.db import LOG_FILE
from eventlog.writer import GroupCommitWriter
from projections.base import Projector
from projections.registry import all_projectors
from projections.runner import Runner
from projections.storage import SQLITE


async def healthz(request: web.Request) -> web.Response:
    writer, runner = request.app[WRITER], request.app[RUNNER]
    settings = request.app[SETTINGS]
    storage = settings.storage
    # the log failing alone degrades the service: the spool keeps what it cannot take
    down, spooling_reasons = await spooling.health(request.app)
    log_down = []
    if not writer.healthy:
        log_down.append("the log's last commit failed")
    data_dir = storage.data_dir
    if storage.backend == SQLITE and (
        not os.access(data_dir, os.W_OK) or not os.access(data_dir / LOG_FILE, os.W_OK)
    ):
        log_down.append(f"the log in {data_dir} is not writable")
    if not os.access(settings.spool_path, os.W_OK):
        down.append(f"the spool in {settings.spool_path} is not writable")
    if down:
        down = log_down + down
        return web.json_response(
            {"status": "unavailable", "backend": storage.backend, "reasons": down},
            status=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    def views_state() -> tuple[dict[str, str], list[str]]:  # reads the database: off the loop
        building = [p.name for p in runner.projectors if not runner.is_ready(p.name)]
        return runner.errors, building

    errors, building = await request.app[READER].call(views_state)
    reasons = log_down + spooling_reasons
    reasons += [f"projector {name} is stuck: {error}" for name, error in sorted(errors.items())]
    body = {
        "status": "degraded" if reasons else "ok",
        "backend": storage.backend,
        "views_catching_up": building,
    }
    if reasons:
        body["reasons"] = reasons
    return web.json_response(body)


def create_app(settings: Settings, projectors: list[Projector] | None = None) -> web.Application:
    """The whole service, as `notestore serve` runs it and the tests; `projectors` defaults
    to every registered view.

    The app commits to the log from a thread of its own (GroupCommitWriter), and runs the
    projectors in-process if given (tests) or else in a process it starts and restarts
    (ProcessMonitor).
    """
    install_parser_error_handler()  # for whichever runner serves it: tests', serve's
    app = web.Application(
        middlewares=[errors_as_json],
        client_max_size=settings.max_body_bytes,
        # the signature covers the bytes as received (spec/webhooks.md): never decompressed
        handler_args={"logger": PROTOCOL_LOG, "auto_decompress": False},
    )
    app[SETTINGS] = settings

    async def log_and_views(app: web.Application) -> AsyncIterator[None]:
        monitor: Runner | ProcessMonitor
        storage = settings.storage
        await asyncio.to_thread(storage.prepare)  # the log exists, its schema up to date
        if projectors is not None:
            monitor = Runner(storage, projectors, poll_interval=0.05)
        else:
            monitor = ProcessMonitor(storage, all_projectors())
        app[RUNNER] = monitor
        app[WRITER] = GroupCommitWriter(
            storage.log_store(writer=True),
            on_commit=monitor.notify,
            on_batch=app[METRICS].batch_size.observe,
        )
        await monitor.start()
        yield
        try:
            await monitor.stop()
        finally:
            await asyncio.to_thread(app[WRITER].close)  # commits what it was handed, then stops

    async def stop_restarting(app: web.Application) -> None:
        # from the first moment of shutdown: a projector process that stops with serve (a
        # signal to the whole process group, Ctrl-C) is not restarted while requests drain
        monitor = app[RUNNER]
        if isinstance(monitor, ProcessMonitor):
            monitor.stop_restarting()

    metrics.install(app)
    app.cleanup_ctx.append(log_and_views)
    spooling.install(app)  # after the log's writer: the drainer appends through it
    app.on_shutdown.append(stop_restarting)
    api.add_routes(app)
    app.router.add_post("/webhooks/mobio", receiver.receive)
    app.router.add_get("/webhooks/mobio", receiver.online_check)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/openapi.json", openapi.serve_document)
    ui.add_routes(app)  # the inspector's pages under /ui/
    return app
