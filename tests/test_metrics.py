"""Every metric family appears on /metrics and moves when its event happens."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from app.signing import SIGNATURE_HEADER
from tests.helpers import make_block, make_body, sample, settled, signed_post


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
    assert value(after, "notestore_delivery_seconds_bucket", le="0.1") >= 6
    assert value(after, "notestore_log_last_seq") == 2
    assert value(after, "notestore_quarantine_items") == 2
    assert value(after, "notestore_log_bytes") > 0 and value(after, "notestore_disk_free_bytes") > 0
    for view in ("notes", "comments", "mentions"):
        assert value(after, "notestore_view_checkpoint", view=view) == 2
        assert value(after, "notestore_view_lag_events", view=view) == 0


async def test_view_lag_shows_events_not_yet_applied(client, settings):
    from tests.views_kit import append_blocks

    await settled(settings)
    append_blocks(settings.data_dir, [make_block()])  # another process appends; the runner polls
    metrics = await scrape(client)
    assert value(metrics, "notestore_log_last_seq") == 1
    assert value(metrics, "notestore_view_lag_events", view="notes") in (0, 1)
    await settled(settings)
    metrics = await scrape(client)
    assert value(metrics, "notestore_view_lag_events", view="notes") == 0


async def test_delivery_counts_reach_the_shared_counters_in_bulk() -> None:
    from app.metrics import Metrics

    metrics = Metrics()
    ok, accepted = metrics.delivery["ok"], metrics._blocks["accepted"]
    start, accepted_before = ok._value.get(), accepted._value.get()
    for _ in range(3):
        metrics.tally(ok)
    metrics.count_blocks(accepted=2, duplicates=0, quarantined=1)
    assert ok._value.get() == start  # held until the flush
    metrics.flush()
    assert ok._value.get() == start + 3
    assert accepted._value.get() == accepted_before + 2
    metrics.flush()  # nothing pending: nothing counted twice
    assert ok._value.get() == start + 3
