"""Typed keys for what the aiohttp application shares between handlers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from app.config import Settings
from eventlog.writer import GroupCommitWriter

if TYPE_CHECKING:
    from app.api import Reader
    from app.metrics import Metrics
    from app.views_monitor import ProcessMonitor
    from projections.runner import Runner

SETTINGS = web.AppKey("settings", Settings)
WRITER: web.AppKey[GroupCommitWriter] = web.AppKey("writer")
RUNNER: web.AppKey[Runner | ProcessMonitor] = web.AppKey("runner")
READER: web.AppKey[Reader] = web.AppKey("reader")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
