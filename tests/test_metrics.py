"""Every metric family appears on /metrics and moves when its event happens."""

from __future__ import annotations

import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.signing import SIGNATURE_HEADER
from app.web import create_app
from projections.base import Projector
from projections.comments import CommentsProjector
from projections.mentions import MentionsProjector
from projections.notes import NotesProjector
from tests.helpers import make_block, make_body, sample, settled, signed_post, wait_for
from tests.views_kit import append_blocks

pytestmark = pytest.mark.backends("sqlite", "postgresql")


async def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:  # type: ignore[no-untyped-def]
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.content_type == "text/plain"
    values = {}
    for family in text_string_to_metric_families(await resp.text()):
        for s in family.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return values


def value(metrics, name: str, **labels: str) -> float:  # type: ignore[no-untyped-def]
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_each_metric_moves_with_its_event(client, settings):
    before = await scrape(client)
    await signed_post(client, sample("note_create"))
    await signed_post(client, sample("note_create"))
    await signed_post(client, b"not json")
    await signed_post(client, make_body(make_block(), {"message_id": ""}))
    await client.post("/webhooks/mobio", data=b"{}", headers={SIGNATURE_HEADER: "0" * 64})
    await client.post("/webhooks/mobio", data=b"x" * (settings.max_body_bytes + 1))
    await settled(settings)
    after = await scrape(client)

    def moved(name: str, by: float, **labels: str) -> None:
        assert value(after, name, **labels) - value(before, name, **labels) == by, (name, labels)

    moved("notestore_deliveries_total", 4, outcome="ok")
    moved("notestore_deliveries_total", 1, outcome="unauthorized")
    moved("notestore_deliveries_total", 1, outcome="too_large")
    moved("notestore_blocks_total", 2, outcome="accepted")
    moved("notestore_blocks_total", 1, outcome="duplicate")
    moved("notestore_blocks_total", 2, outcome="quarantined")
    moved("notestore_quarantined_total", 1, reason="not_json")
    moved("notestore_quarantined_total", 1, reason="invalid_block")
    moved("notestore_events_total", 2, event_type="note_create")
    moved("notestore_delivery_seconds_count", 6)
    moved("notestore_group_commit_deliveries_count", 4)
    # every delivery is in the latency histogram; how fast it was is not this test's business
    moved("notestore_delivery_seconds_bucket", 6, le="+Inf")
    assert value(after, "notestore_log_last_seq") == 2
    assert value(after, "notestore_quarantine_items") == 2
    assert value(after, "notestore_disk_free_bytes") > 0
    if settings.storage.backend == "sqlite":  # the file's size; PostgreSQL reports its own
        assert value(after, "notestore_log_bytes") > 0
    for view in ("notes", "comments", "mentions"):
        assert value(after, "notestore_view_checkpoint", view=view) == 2
        assert value(after, "notestore_view_lag_events", view=view) == 0


class Held:
    """Mixed into a projector: applying a batch waits while the test holds `gate` closed.

    `held` is set once a projector has read new events and waits at the gate; the
    runner's projectors write views.db one at a time, so the others wait behind it and
    no view moves its checkpoint until the gate opens.
    """

    def __init__(self, gate: threading.Event, held: threading.Event) -> None:
        super().__init__()
        self.gate, self.held = gate, held

    def apply(self, conn, events, suffix):  # type: ignore[no-untyped-def]
        self.held.set()
        if not self.gate.wait(60):
            raise RuntimeError("the test never opened the gate")
        super().apply(conn, events, suffix)  # type: ignore[misc]


class HeldNotes(Held, NotesProjector):
    pass


class HeldComments(Held, CommentsProjector):
    pass


class HeldMentions(Held, MentionsProjector):
    pass


async def test_view_lag_shows_events_not_yet_applied(aiohttp_client, settings):
    gate, held = threading.Event(), threading.Event()
    gate.set()  # open while the views are first built
    settings.storage.prepare()
    append_blocks(settings.storage, [make_block(), make_block()])
    projectors: list[Projector] = [
        HeldNotes(gate, held),
        HeldComments(gate, held),
        HeldMentions(gate, held),
    ]
    client = await aiohttp_client(create_app(settings, projectors))
    await settled(settings)
    gate.clear()
    held.clear()
    try:
        # another process appends three events; the runner polls, reads them and is held
        append_blocks(settings.storage, [make_block(), make_block(), make_block()])
        await wait_for(held.is_set, what="a projector read the new events")
        metrics = await scrape(client)
        assert value(metrics, "notestore_log_last_seq") == 5
        for view in ("notes", "comments", "mentions"):
            assert value(metrics, "notestore_view_checkpoint", view=view) == 2, view
            assert value(metrics, "notestore_view_lag_events", view=view) == 3, view
    finally:
        gate.set()
    await settled(settings)
    metrics = await scrape(client)
    for view in ("notes", "comments", "mentions"):
        assert value(metrics, "notestore_view_checkpoint", view=view) == 5, view
        assert value(metrics, "notestore_view_lag_events", view=view) == 0, view
