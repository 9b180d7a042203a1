"""Prometheus metrics: counters the receiver moves, gauges read at scrape time."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING

import structlog
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from app.keys import METRICS, READER, SETTINGS
from eventlog.append import Outcome
from eventlog.db import file_sizes
from eventlog.dbapi import Connection
from eventlog.models import KNOWN_EVENTS
from eventlog.read import head_seq
from projections.registry import all_projectors
from projections.status import all_status
from projections.storage import SQLITE

if TYPE_CHECKING:
    from prometheus_client.core import Metric

log = structlog.get_logger("notestore.metrics")

# Mobio's budget is 100 ms: resolve finely below it, coarsely above.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()  # what /metrics serves
        r = self.registry
        self.requests = Counter(
            "notestore_deliveries", "Webhook deliveries by outcome "
            "(ok, unauthorized, too_large, unavailable)", ["outcome"], registry=r,
        )  # fmt: skip
        self.blocks = Counter(
            "notestore_blocks", "Blocks (or whole bodies) accepted, duplicate or quarantined",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.quarantined = Counter(
            "notestore_quarantined", "Items sent to quarantine, by reason", ["reason"], registry=r
        )
        self.events = Counter(
            "notestore_events", "Events appended to the log, by type", ["event_type"], registry=r
        )
        self.latency = Histogram(
            "notestore_delivery_seconds", "Time to answer a webhook delivery",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        # children bound once: labels() costs a lock and a lookup on every call
        self.delivery = {
            o: self.requests.labels(o) for o in ("ok", "unauthorized", "too_large", "unavailable")
        }
        self._blocks = {o: self.blocks.labels(o) for o in ("accepted", "duplicate", "quarantined")}
        self._events: dict[str, Counter] = {}
        self.batch_size = Histogram(
            "notestore_group_commit_deliveries", "Deliveries committed together in one transaction",
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip

    def count_blocks(self, accepted: int, duplicates: int, quarantined: int) -> None:
        if accepted:
            self._blocks["accepted"].inc(accepted)
        if duplicates:
            self._blocks["duplicate"].inc(duplicates)
        if quarantined:
            self._blocks["quarantined"].inc(quarantined)

    def count_outcome(self, outcome: Outcome) -> None:
        """A delivery's blocks, quarantine reasons and event types, once in the log."""
        self.count_blocks(outcome.accepted, outcome.duplicates, outcome.quarantined)
        for reason in outcome.reasons:
            self.quarantined.labels(reason).inc()
        for event_type in outcome.event_types:
            self.event_of_type(event_type).inc()

    def event_of_type(self, event_type: str) -> Counter:
        # unknown types share one label, so signed-but-odd input cannot grow the series
        event_type = event_type if event_type in KNOWN_EVENTS else "other"
        child = self._events.get(event_type)
        if child is None:
            child = self._events[event_type] = self.events.labels(event_type)
        return child


def held_count(conn: Connection) -> int:
    """Quarantined items still held: what eventlog.replay.held_items lists.

    An item whose replay ended `appended` or `duplicate` is in the log and no longer held;
    one that was never replayed, or whose replays all still failed, is.
    """
    return int(
        conn.execute(
            "SELECT count(*) FROM quarantine WHERE id NOT IN (SELECT quarantine_id"
            " FROM quarantine_replays WHERE outcome IN ('appended', 'duplicate'))"
        ).fetchone()[0]
    )


class StateCollector(Collector):
    """Log size, free disk, quarantine size, each view's checkpoint and lag: read when scraped."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        settings = self.app[SETTINGS]
        views, log = self.app[READER].connections()  # scrape() runs this in the query pool
        if settings.storage.backend == SQLITE:  # on PostgreSQL, the server's own metrics
            log_bytes, wal_bytes = file_sizes(settings.events_path)
            yield GaugeMetricFamily("notestore_log_bytes", "Size of events.db", value=log_bytes)
            yield GaugeMetricFamily(
                "notestore_log_wal_bytes", "Size of events.db's WAL (events.db-wal)",
                value=wal_bytes,
            )  # fmt: skip
        yield GaugeMetricFamily(
            "notestore_disk_free_bytes", "Free space under data_dir",
            value=shutil.disk_usage(settings.data_dir).free,
        )  # fmt: skip
        head = head_seq(log)
        yield GaugeMetricFamily(
            "notestore_log_last_seq", "Position of the newest event", value=head
        )
        yield GaugeMetricFamily(
            "notestore_quarantine_items", "Items held in quarantine (not replayed into the log)",
            value=held_count(log),
        )  # fmt: skip
        checkpoint = GaugeMetricFamily(
            "notestore_view_checkpoint", "Last seq applied", labels=["view"]
        )
        lag = GaugeMetricFamily(
            "notestore_view_lag_events", "Events not yet applied", labels=["view"]
        )
        for view in all_status(views, log, all_projectors()):
            checkpoint.add_metric([view["name"]], view["checkpoint"] or 0)
            lag.add_metric([view["name"]], view["lag"])
        yield checkpoint
        yield lag


def install(app: web.Application) -> None:
    metrics = Metrics()
    metrics.registry.register(StateCollector(app))
    app[METRICS] = metrics
    app.router.add_get("/metrics", scrape)


async def scrape(request: web.Request) -> web.Response:
    # StateCollector reads the databases: off the event loop, like the query routes
    body = await request.app[READER].call(generate_latest, request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
