"""The spool in serve: where a delivery goes when the log cannot take it in time.

install(app) opens this instance's spool (eventlog.spool) with a group-commit writer of
its own, runs the drainer (eventlog.drain) on the event loop, and adds the spool's
figures to /metrics and /healthz. The receiver asks `keep(request, delivery)`.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from prometheus_client import Counter, Gauge

from app.errors import NotestoreError, Unavailable
from app.keys import METRICS, SETTINGS, WRITER
from app.lock import try_lock
from eventlog.append import Delivery
from eventlog.drain import Drainer
from eventlog.spool import Spool
from eventlog.writer import GroupCommitWriter, LogUnavailable

log = structlog.get_logger("notestore.spool")

SPOOL_LOCK = "spool.lock"
SPOOL_WRITER: web.AppKey[GroupCommitWriter] = web.AppKey("spool_writer")
DRAINER: web.AppKey[Drainer] = web.AppKey("drainer")
LOST: web.AppKey[Counter] = web.AppKey("deliveries_lost")
SPOOLED: web.AppKey[Counter] = web.AppKey("deliveries_spooled")


def install(app: web.Application) -> None:
    """After the log's writer is set up (its cleanup context first): the spool's comes
    second, so the drainer stops before the log's writer closes."""
    registry = app[METRICS].registry
    app[LOST] = Counter(
        "notestore_deliveries_lost", "Deliveries answered 503 because neither the log nor the"
        " spool could keep them (Mobio does not resend them)", registry=registry,
    )  # fmt: skip
    app[SPOOLED] = Counter(
        "notestore_deliveries_spooled", "Deliveries kept in the spool", registry=registry
    )

    def figure(name: str) -> float:
        drainer = app.get(DRAINER)
        if drainer is None:
            return 0.0
        stats = drainer.stats
        return {
            "depth": stats.depth,
            "age": stats.oldest_age_s(),
            "aside": stats.set_aside,
            "bytes": stats.bytes,
        }[name]

    for metric, doc, name in (
        ("notestore_spool_deliveries", "Deliveries in the spool, not yet in the log", "depth"),
        ("notestore_spool_oldest_age_seconds", "Age of the oldest spooled delivery", "age"),
        ("notestore_spool_set_aside", "Spooled deliveries the log would not take", "aside"),
        ("notestore_spool_bytes", "Bodies held in the spool", "bytes"),
    ):
        Gauge(metric, doc, registry=registry).set_function(functools.partial(figure, name))

    async def spool_and_drainer(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        folder = settings.spool_path
        lock = await asyncio.to_thread(try_lock, folder / SPOOL_LOCK)
        if lock is None:
            raise NotestoreError(
                f"another notestore serve uses the spool in {folder}: give each instance"
                " its own spool_dir (and data_dir)"
            )
        spool = await asyncio.to_thread(Spool, folder, settings.spool_max_bytes)
        app[SPOOL_WRITER] = GroupCommitWriter(spool, label="spool")
        drainer = Drainer(
            spool,
            app[WRITER],
            settings.storage.log_store,
            settings.log_commit_timeout_ms / 1000,
            # its blocks are counted once in the log: duplicates and conflicts are known then
            on_drained=app[METRICS].count_outcome,
        )
        app[DRAINER] = drainer
        stop = asyncio.Event()
        task = asyncio.create_task(drainer.run(stop))
        try:
            yield
        finally:
            stop.set()
            await task
            await asyncio.to_thread(app[SPOOL_WRITER].close)
            os.close(lock)

    app.cleanup_ctx.append(spool_and_drainer)


async def keep(request: web.Request, delivery: Delivery, error: str | None) -> dict[str, object]:
    """Spool the delivery (the log failed with `error`, or the spool is draining), and
    the answer it gets; Unavailable (503) if the spool cannot keep it either."""
    app = request.app
    intake = delivery.intake
    drainer = app[DRAINER]
    drainer.spooling += 1  # a delivery arriving meanwhile queues behind this one
    try:
        await app[SPOOL_WRITER].append(delivery)
    except LogUnavailable as exc:
        app[LOST].inc()
        log.error(
            "delivery_lost", request_id=intake.request_id, app_id=delivery.app_id,
            log_error=error, spool_error=str(exc),
            hint="answered 503: Mobio does not resend it",
        )  # fmt: skip
        raise Unavailable(
            "neither the log nor the spool can keep this delivery right now; nothing was stored"
        ) from None
    finally:
        drainer.spooling -= 1
    drainer.spooled()
    app[SPOOLED].inc()
    log.warning(
        "delivery_spooled", request_id=intake.request_id, app_id=delivery.app_id,
        message_ids=[e.message_id for e in intake.events], log_error=error,
    )  # fmt: skip
    return {
        "accepted": len(intake.events),
        "duplicates": 0,
        "quarantined": len(intake.rejected),
        "spooled": True,
    }


async def health(app: web.Application) -> tuple[list[str], list[str]]:
    """(why no delivery can be kept now, why the service is degraded)."""
    down: list[str] = []
    degraded: list[str] = []
    spool_writer, drainer = app.get(SPOOL_WRITER), app.get(DRAINER)
    log_writer = app.get(WRITER)
    log_failing = (log_writer is not None and not log_writer.healthy) or (
        drainer is not None and drainer.active  # the log is not taking deliveries now
    )
    if spool_writer is not None and not spool_writer.healthy and log_failing:
        # (a spool write fails only when the log has; once the log commits again, no
        # delivery needs the spool: its last failure no longer loses anything)
        down.append("the spool's last write failed: deliveries the log cannot take are lost")
    if drainer is None:
        return down, degraded
    try:
        stats = await drainer.refresh()
    except Exception as exc:
        down.append(f"the spool cannot be read: {exc}")
        return down, degraded
    if stats.waiting:
        degraded.append(
            f"{stats.waiting} deliveries spooled, the oldest {stats.oldest_age_s():.0f} s"
            " ago: the log is not taking them yet"
        )
    if stats.set_aside:
        degraded.append(
            f"{stats.set_aside} spooled deliveries set aside: neither the log nor its"
            " quarantine would take them (notestore status)"
        )
    return down, degraded
