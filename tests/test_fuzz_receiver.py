"""Hostile input (hypothesis): never a 500, unsigned input stored nowhere, signed input kept somewhere."""

from __future__ import annotations

import json
import sqlite3

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.signing import SIGNATURE_HEADER
from tests.helpers import APP_A, make_block, make_body, signature

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
block_fields = st.fixed_dictionaries(
    {},
    optional={
        "message_id": json_values | st.text(min_size=1, max_size=200),
        "event_type": st.sampled_from(["note_create", "note_comment_delete", "x"]) | json_values,
        "data_event": json_values | st.fixed_dictionaries({"action_time": json_values, "note_id": json_values,
                                                            "event_detail": json_values}),
    },
)  # fmt: skip


def _nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


bodies = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda v: json.dumps(v).encode(), json_values),
    st.builds(lambda bs: json.dumps({"app_id": APP_A, "block_event": bs}).encode(), st.lists(block_fields, max_size=4)),
    st.builds(lambda b: json.dumps(make_body(b)).encode()[: len(json.dumps(make_body(b))) // 2], st.just(make_block())),
    st.builds(lambda t: json.dumps(make_body(make_block())).encode().decode().encode(t, errors="replace"),
              st.sampled_from(["utf-16", "latin-1", "utf-32"])),
    st.integers(1, 100_000).map(_nested),
    st.just(b"x" * 70_000),
)  # fmt: skip
headers = st.one_of(
    st.just("sign"),
    st.just(None),
    st.text(st.characters(min_codepoint=32, blacklist_categories=("Cc", "Cs")), max_size=100),
    st.sampled_from(["0" * 64, "Z" * 64, "ạ" * 10, " " * 5]),
)


def counts(db) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    conn = sqlite3.connect(db)
    try:
        return tuple(
            conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("requests", "events", "quarantine")
        )  # type: ignore[return-value]
    finally:
        conn.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies, header=headers)
async def test_hostile_bodies_and_headers(client, settings_, body, header):  # type: ignore[no-untyped-def]
    sent = {}
    if header == "sign":
        sent[SIGNATURE_HEADER] = signature(body)
    elif header is not None:
        sent[SIGNATURE_HEADER] = header.encode("utf-8").decode("latin-1")
    before = counts(settings_.events_path) if settings_.events_path.exists() else (0, 0, 0)
    resp = await client.post("/webhooks/mobio", data=body, headers=sent)
    answer = await resp.json()
    after = counts(settings_.events_path)
    assert resp.status in (200, 401, 413), answer
    if resp.status != 200:
        assert set(answer) == {"error"} and after == before  # refused input touches nothing
        return
    assert header == "sign" and after[0] == before[0] + 1
    assert answer["accepted"] + answer["duplicates"] + answer["quarantined"] >= 1
    assert after[1] - before[1] == answer["accepted"]
    assert after[2] - before[2] <= answer["quarantined"]
