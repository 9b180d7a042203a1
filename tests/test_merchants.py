"""Merchant isolation: a signed event can only ever change data of its own merchant.

Forged events of merchant B about merchant A's note and comment ids, delivered before,
between and after A's genuine events and through both apps, leave every answer A's
token gets exactly as it is without them, incrementally and after a rebuild.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from app.web import create_app
from eventlog.db import LOG_FILE, connect
from projections.rebuild import rebuild_all
from projections.registry import all_projectors
from tests.helpers import (
    APP_A,
    APP_B,
    MERCHANT,
    SAMPLE_FILES,
    SECRETS,
    make_block,
    make_body,
    settled,
    signed_post,
)
from tests.views_kit import append_bodies

pytestmark = pytest.mark.backends("sqlite", "postgresql")

THEIRS = "merchant-b"
NOTE = "637dfa373e395b0cead72666"  # A's note in the samples (created, then updated)
DELETED_NOTE = "63843fceb0d322e9a7678bec"  # A's note with a comment thread
COMMENT = "63844023d1f4d7390fe1deb6"  # A's comment on DELETED_NOTE
TOKENS = {"ops-token": ("*",), "a-token": (MERCHANT,), "b-token": (THEIRS,)}
A = {"Authorization": "Bearer a-token"}
OPS = {"Authorization": "Bearer ops-token"}
LATE = 1669900000.0  # later than every genuine event: a forged event would win any fold


def genuine_bodies() -> list[tuple[str, dict[str, Any]]]:
    """(app, body) of A's events: the six samples and a mention with a related deal."""
    bodies = [(json.loads(p.read_bytes())["app_id"], json.loads(p.read_bytes())) for p in SAMPLE_FILES]
    mention = make_block("note_update_data", note_id=NOTE, action_time=1669300000.0, event_detail=[
        {"field_key": "account_mentions", "add": [["acc-1"]]},
        {"field_key": "related_to", "add": [{"deal_ids": ["deal-1"]}]},
    ])  # fmt: skip
    bodies.append((APP_A, make_body(mention)))
    return bodies


def forged_blocks(n: int, delete: bool = True) -> list[dict[str, Any]]:
    """B's events naming A's ids, each later than A's: fresh message ids on every call."""
    at = LATE + n
    blocks = [
        make_block("note_update_data", note_id=NOTE, merchant_id=THEIRS, action_time=at, event_detail=[
            {"field_key": "description", "change": [{"from": "x", "to": "<p>forged</p>"}]},
            {"field_key": "account_mentions", "add": [["acc-1", "acc-2"]]},
            {"field_key": "related_to", "add": [{"deal_ids": ["deal-1"]}]},
            {"field_key": "object_id", "add": ["635b528eb3528d2e7a0477ba"]},
        ]),
        make_block("note_comment_create", comment_id=COMMENT, merchant_id=THEIRS, action_time=at,
                   event_detail=[{"field_key": "object_id", "add": [DELETED_NOTE]},
                                 {"field_key": "description", "add": ["forged comment"]}]),
        make_block("note_comment_create", comment_id=f"their-comment-{n}", merchant_id=THEIRS,
                   action_time=at, event_detail=[{"field_key": "object_id", "add": [NOTE]}]),
        make_block("note_update_data", note_id=DELETED_NOTE, merchant_id=THEIRS, action_time=at,
                   event_detail=[{"field_key": "description", "add": ["forged"]}]),
        make_block("deal_update", note_id=NOTE, merchant_id=THEIRS, action_time=at),
    ]  # fmt: skip
    if delete:
        blocks.append(make_block("note_delete", note_id=NOTE, merchant_id=THEIRS, action_time=at + 0.5))
    return blocks


def forged_body(app: str, n: int, delete: bool = True) -> tuple[str, dict[str, Any]]:
    body = make_body(*forged_blocks(n, delete), app_id=app)
    body["merchant_id"] = THEIRS
    return app, body


def settings_in(path: Path, database_url: str | None = None) -> Settings:
    return Settings(data_dir=path / "data", apps=SECRETS, tokens=TOKENS, database_url=database_url)


ROUTES = [
    f"/notes/{NOTE}",
    f"/notes/{DELETED_NOTE}",
    f"/notes/{NOTE}?as_of=1669300000",
    f"/notes/{NOTE}?as_of=1669999999",
    f"/notes/{DELETED_NOTE}?as_of=1669999999",
    f"/notes/{NOTE}/history",
    f"/notes/{DELETED_NOTE}/history",
    f"/notes/{NOTE}/comments?include_deleted=true",
    f"/notes/{DELETED_NOTE}/comments?include_deleted=true",
    "/notes?related_to=deal-1",
    "/notes?related_to=635b528eb3528d2e7a0477ba",
    "/accounts/acc-1/mentions",
    "/accounts/acc-2/mentions",
    "/events?limit=1000",
]


def _stable(answer: Any) -> Any:
    """An answer without what differs between two logs of the same events: positions, arrival."""
    if isinstance(answer, dict):
        return {k: _stable(v) for k, v in answer.items() if k not in ("seq", "received_at", "next_after")}
    if isinstance(answer, list):
        return [_stable(v) for v in answer]
    return answer


async def answers(client, headers: dict[str, str]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    found = {}
    for route in ROUTES:
        resp = await client.get(route, headers=headers)
        found[route] = (resp.status, _stable(await resp.json()))
    return found


async def deliver(client, settings: Settings, deliveries: list[tuple[str, dict[str, Any]]]) -> None:  # type: ignore[no-untyped-def]
    for app, body in deliveries:
        status, answer = await signed_post(client, body, app)
        assert status == 200 and answer["quarantined"] == 0, answer
    await settled(settings)


def rebuild(settings: Settings) -> None:
    views = settings.storage.views()
    log = settings.storage.log_reader()
    try:
        rebuild_all(all_projectors(), views, log)
    finally:
        views.close()
        log.close()


async def test_forged_events_of_another_merchant_change_nothing_merchant_a_reads(aiohttp_client, tmp_path, database_url):
    """The attacked store is the backend under test; the clean reference is always SQLite."""
    genuine = genuine_bodies()
    clean = settings_in(tmp_path / "clean")
    clean_client = await aiohttp_client(create_app(clean))
    await deliver(clean_client, clean, genuine)
    expected = await answers(clean_client, A)
    assert expected[f"/notes/{NOTE}"][0] == 200 and expected["/accounts/acc-1/mentions"][1]["items"]
    assert len(expected[f"/notes/{DELETED_NOTE}/history"][1]["events"]) == 3

    attacked = settings_in(tmp_path / "attacked", database_url)
    client = await aiohttp_client(create_app(attacked))
    order = [forged_body(APP_A, 1), *genuine[:3], forged_body(APP_B, 2), *genuine[3:], forged_body(APP_A, 3),
             forged_body(APP_B, 4)]  # fmt: skip
    await deliver(client, attacked, order)
    assert await answers(client, A) == expected
    # a "*" token names the merchant and gets the same answers for A
    named = {r: (s, b) for r, (s, b) in (await answers(client, OPS)).items()}
    assert named[f"/notes/{NOTE}"][0] == 409
    for route in ROUTES[:9]:
        sep = "&" if "?" in route else "?"
        resp = await client.get(f"{route}{sep}merchant_id={MERCHANT}", headers=OPS)
        assert (resp.status, _stable(await resp.json())) == expected[route], route

    rebuild(attacked)
    assert await answers(client, A) == expected


async def test_the_other_merchant_reads_only_its_own_events(aiohttp_client, tmp_path, database_url):
    settings = settings_in(tmp_path, database_url)
    client = await aiohttp_client(create_app(settings))
    await deliver(client, settings, [*genuine_bodies(), forged_body(APP_A, 1)])
    b = {"Authorization": "Bearer b-token"}
    note = await (await client.get(f"/notes/{NOTE}", headers=b)).json()
    assert (note["merchant_id"], note["description"], note["event_count"]) == (THEIRS, "<p>forged</p>", 2)
    assert note["created_time"] is None and note["deleted"] is True  # nothing of A's note came along
    history = await (await client.get(f"/notes/{NOTE}/history", headers=b)).json()
    assert {e["merchant_id"] for e in history["events"]} == {THEIRS}
    assert sorted(e["event_type"] for e in history["events"]) == [
        "deal_update", "note_comment_create", "note_delete", "note_update_data"]  # fmt: skip
    assert history["events"][-1]["event_type"] == "note_delete"  # the latest stamp
    thread = await (await client.get(f"/notes/{DELETED_NOTE}/comments", headers=b)).json()
    assert [(c["comment_id"], c["description"]) for c in thread["comments"]] == [(COMMENT, "forged comment")]


async def test_an_id_held_by_several_merchants_is_a_409_for_a_star_token_and_never_for_lists(
    aiohttp_client, tmp_path, database_url
):
    settings = settings_in(tmp_path, database_url)
    client = await aiohttp_client(create_app(settings))
    await deliver(client, settings, [*genuine_bodies(), forged_body(APP_B, 1, delete=False)])
    for route in (f"/notes/{NOTE}", f"/notes/{NOTE}/history", f"/notes/{NOTE}/comments",
                  f"/notes/{NOTE}?as_of=1669999999"):  # fmt: skip
        resp = await client.get(route, headers=OPS)
        body = await resp.json()
        assert resp.status == 409 and body["merchants"] == sorted([MERCHANT, THEIRS]), route
        assert "merchant_id" in body["error"]
        resp = await client.get(f"{route}{'&' if '?' in route else '?'}merchant_id={THEIRS}", headers=OPS)
        assert resp.status == 200, route
        resp = await client.get(f"{route}{'&' if '?' in route else '?'}merchant_id=nobody", headers=OPS)
        assert resp.status == 404, route
    # scope comes first: A's token asking for B's copy by name learns nothing
    resp = await client.get(f"/notes/{NOTE}?merchant_id={THEIRS}", headers=A)
    assert resp.status == 404
    feed = await (await client.get("/accounts/acc-1/mentions", headers=OPS)).json()
    assert sorted(i["merchant_id"] for i in feed["items"]) == sorted([MERCHANT, THEIRS])
    related = await (await client.get("/notes?related_to=deal-1&limit=1", headers=OPS)).json()
    rest = await (await client.get(f"/notes?related_to=deal-1&limit=1&cursor={related['next_cursor']}",
                                   headers=OPS)).json()  # fmt: skip
    # the same note id under two merchants: paged one by one, neither skipped nor repeated
    assert {(i["merchant_id"], i["note_id"]) for i in related["items"] + rest["items"]} == {
        (MERCHANT, NOTE), (THEIRS, NOTE)}  # fmt: skip
    assert rest["next_cursor"] is None
    events = await (await client.get("/events?limit=1000", headers=OPS)).json()
    assert {e["merchant_id"] for e in events["events"]} == {MERCHANT, THEIRS}


def _reasons(settings: Settings) -> list[str]:
    conn = settings.storage.log_reader()
    try:
        return [r[0] for r in conn.execute("SELECT reason FROM quarantine ORDER BY id")]
    finally:
        conn.close()


async def test_a_block_naming_another_merchant_than_its_envelope_is_quarantined(client, settings):
    good = make_block(note_id="n-good")
    mismatch = make_block(note_id="n-bad", merchant_id=THEIRS)  # the envelope names MERCHANT
    no_own_merchant = make_block(note_id="n-envelope")
    del no_own_merchant["data_event"]["merchant_id"]
    status, answer = await signed_post(client, make_body(good, mismatch, no_own_merchant))
    assert (status, answer) == (200, {"accepted": 2, "duplicates": 0, "quarantined": 1})
    assert _reasons(settings) == ["merchant_mismatch"]
    await settled(settings)
    # the block without a merchant of its own takes its envelope's
    resp = await client.get("/notes/n-envelope", headers={"Authorization": "Bearer merchant-token"})
    assert resp.status == 200 and (await resp.json())["merchant_id"] == MERCHANT


async def test_an_app_bound_to_merchants_speaks_only_for_them(aiohttp_client, tmp_path):
    apps = {APP_A: {"secrets": list(SECRETS[APP_A]), "merchants": [MERCHANT]}, APP_B: SECRETS[APP_B]}
    settings = Settings(data_dir=tmp_path / "data", apps=apps, tokens=TOKENS)
    client = await aiohttp_client(create_app(settings))
    theirs = make_body(make_block(note_id="n1", merchant_id=THEIRS))
    theirs["merchant_id"] = THEIRS
    nobodys = make_body(make_block(note_id="n2"))
    del nobodys["merchant_id"], nobodys["block_event"][0]["data_event"]["merchant_id"]
    ours = make_body(make_block(note_id="n3"), make_block(note_id="n4", merchant_id=THEIRS))
    del ours["merchant_id"]
    answers_ = [await signed_post(client, body, APP_A) for body in (theirs, nobodys, ours)]
    assert [a[1]["quarantined"] for a in answers_] == [1, 1, 1]
    assert [a[1]["accepted"] for a in answers_] == [0, 0, 1]
    assert _reasons(settings) == ["merchant_not_allowed"] * 3
    # the unbound app still speaks for any merchant
    theirs["app_id"] = APP_B
    status, answer = await signed_post(client, theirs, APP_B)
    assert answer == {"accepted": 1, "duplicates": 0, "quarantined": 0}


async def test_blocks_that_could_not_be_read_back_are_quarantined_and_their_neighbours_kept(client, settings):
    too_deep = make_block(note_id="n-deep", event_id="1234567890123456789", event_detail=[
        {"field_key": "attachment_ids", "add": "DEEP"}])  # fmt: skip
    just_deep_enough: Any = "x"
    for _ in range(59):  # block, data_event, event_detail, item, add: 64 levels in all
        just_deep_enough = [just_deep_enough]
    fine = make_block(note_id="n-fine", event_detail=[{"field_key": "attachment_ids", "add": just_deep_enough}])
    far_future = make_block(note_id="n-future", action_time=1e300)
    too_old = make_block(note_id="n-old", action_time=946684799.0)
    nul_id = make_block(note_id="n-\x00")
    control_merchant = make_block(note_id="n-ctl", merchant_id="m\n1")
    control_account = make_block(note_id="n-acc", event_detail=[
        {"field_key": "account_mentions", "add": [["acc\x07"]]}])  # fmt: skip
    good = make_block(note_id="n-good")
    body = make_body(too_deep, fine, far_future, too_old, nul_id, control_merchant, control_account, good)
    del body["merchant_id"]  # so that the control character in a block's merchant is its own problem
    # a list nested 963 deep, as found: json.dumps itself cannot write it
    raw = json.dumps(body).replace('"DEEP"', "[" * 963 + '"x"' + "]" * 963).encode()
    status, answer = await signed_post(client, raw)
    assert (status, answer) == (200, {"accepted": 2, "duplicates": 0, "quarantined": 6})
    assert _reasons(settings) == ["too_deep", "implausible_time", "implausible_time", "invalid_block",
                                  "invalid_block", "invalid_block"]  # fmt: skip
    await settled(settings)
    for route in ("/notes/n-fine/history", "/events?limit=1000", "/notes/n-fine?as_of=1669999999"):
        resp = await client.get(route, headers=OPS)
        assert resp.status == 200, route


def test_replay_judges_merchants_by_the_config_of_today(tmp_path):
    """Quarantined as merchant_not_allowed, a block is appended once its app may speak for it."""

    def write_config(merchants: list[str] | None) -> Path:
        path = tmp_path / "notestore.toml"
        app = (f'[apps."{APP_A}"]\nsecrets = {json.dumps(list(SECRETS[APP_A]))}\nmerchants = {json.dumps(merchants)}\n'
               if merchants is not None else f'[apps."{APP_B}"]\nsecrets = {json.dumps(list(SECRETS[APP_B]))}\n')  # fmt: skip
        path.write_text('data_dir = "data"\n' + app)
        return path

    def replay(config: Path) -> str:
        done = subprocess.run([sys.executable, "-m", "app", "quarantine", "replay", "--all", "--config", str(config)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    settings = settings_in(tmp_path)
    theirs = make_body(make_block(note_id="n-b", merchant_id=THEIRS))
    theirs["merchant_id"] = THEIRS
    mismatch = make_body(make_block(note_id="n-x", merchant_id=THEIRS))  # the envelope names A
    append_bodies(settings.storage, [theirs, mismatch], allowed_merchants={MERCHANT})
    assert _reasons(settings) == ["merchant_not_allowed", "merchant_mismatch"]
    assert replay(write_config([MERCHANT])) == "2 still_failing\n"
    # an app no longer configured speaks for no merchant (not for any)
    assert replay(write_config(None)) == "2 still_failing\n"
    assert replay(write_config([MERCHANT, THEIRS])) == "1 appended, 1 still_failing\n"
    conn = sqlite3.connect(settings.events_path)
    assert [r[0] for r in conn.execute("SELECT merchant_id FROM events")] == [THEIRS]
    conn.close()


def test_the_depth_limit_is_64_levels_counting_the_block_itself():
    from eventlog.intake import MAX_DEPTH, too_deep

    def nest(levels: int) -> Any:
        value: Any = "leaf"
        for i in range(levels):
            value = [value] if i % 2 else {"k": value}
        return value

    assert MAX_DEPTH == 64
    assert not too_deep(nest(64)) and too_deep(nest(65))
    assert not too_deep("scalar") and not too_deep([]) and too_deep(nest(1), limit=0)


async def test_pages_keep_the_same_note_id_of_several_merchants_at_the_same_time(aiohttp_client, tmp_path):
    """Equal sort time and equal note id: only the merchant tells the items apart in a cursor."""
    settings = settings_in(tmp_path)
    client = await aiohttp_client(create_app(settings))
    deliveries = []
    for merchant, app in ((MERCHANT, APP_A), (THEIRS, APP_B), ("merchant-c", APP_A)):
        block = make_block(note_id="same", merchant_id=merchant, action_time=LATE, event_detail=[
            {"field_key": "object_id", "add": ["deal-2"]},
            {"field_key": "account_mentions", "add": [["acc-9"]]},
        ])  # fmt: skip
        body = make_body(block, app_id=app)
        body["merchant_id"] = merchant
        deliveries.append((app, body))
    await deliver(client, settings, deliveries)
    for route in ("/notes?related_to=deal-2", "/accounts/acc-9/mentions"):
        seen, cursor = [], None
        for _ in range(4):
            query = "&limit=1" if "?" in route else "?limit=1"
            resp = await client.get(f"{route}{query}{f'&cursor={cursor}' if cursor else ''}", headers=OPS)
            page = await resp.json()
            seen += [(i["merchant_id"], i["note_id"]) for i in page["items"]]
            if (cursor := page["next_cursor"]) is None:
                break
        assert seen == [("merchant-c", "same"), (THEIRS, "same"), (MERCHANT, "same")], route


async def test_a_message_id_is_one_merchants_own(client, settings):
    """B sending a block under A's (future) message id neither blocks A's event nor learns of it."""
    genuine = make_block("note_update_data", note_id="n-a", action_time=LATE,
                         event_detail=[{"field_key": "description", "add": ["A's text"]}])  # fmt: skip
    forged = json.loads(json.dumps(genuine))
    forged["data_event"].update(merchant_id=THEIRS, event_detail=[{"field_key": "description", "add": ["B's"]}])
    theirs = make_body(forged, app_id=APP_B)
    theirs["merchant_id"] = THEIRS
    assert (await signed_post(client, theirs, APP_B))[1]["accepted"] == 1
    assert (await signed_post(client, make_body(genuine)))[1]["accepted"] == 1
    assert (await signed_post(client, make_body(genuine)))[1]["duplicates"] == 1
    # the same block without a merchant of its own, under each envelope: one event each
    bare = make_block(note_id="n-e", action_time=LATE)
    del bare["data_event"]["merchant_id"]
    for merchant in (THEIRS, MERCHANT):
        body = make_body(bare)
        body["merchant_id"] = merchant
        assert (await signed_post(client, body))[1]["accepted"] == 1
    await settled(settings)
    resp = await client.get("/notes/n-a", headers={"Authorization": "Bearer merchant-token"})
    assert (await resp.json())["description"] == "A's text"
    assert _reasons(settings) == []


def test_a_log_written_before_message_ids_were_per_merchant_is_migrated_and_still_verifies(tmp_path):
    from eventlog.db import open_log
    from eventlog.migrations import MIGRATIONS, _statements
    from eventlog.verify import verify_log

    old = sqlite3.connect(tmp_path / LOG_FILE, isolation_level=None)
    for statement in _statements(MIGRATIONS[0]):
        old.execute(statement)
    old.execute("PRAGMA user_version = 1")
    old.close()
    append_bodies(tmp_path, [body for _, body in genuine_bodies()])  # opens it: migrates it
    conn = connect(tmp_path / LOG_FILE)
    rows = conn.execute("SELECT * FROM events ORDER BY seq").fetchall()
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 6
    conn.close()
    assert len(rows) == 7
    with sqlite3.connect(tmp_path / LOG_FILE) as raw:  # the append-only triggers came back
        for statement in ("UPDATE events SET block = '{}'", "DELETE FROM events"):
            try:
                raw.execute(statement)
            except sqlite3.DatabaseError as exc:
                assert "append-only" in str(exc)
            else:
                raise AssertionError(f"{statement} was allowed")
    log = open_log(tmp_path)
    try:
        assert verify_log(log, lambda app, fingerprint, body: None).ok
    finally:
        log.close()


def test_a_request_id_or_refused_message_id_holding_a_control_character_is_not_kept_apart():
    """Such a value stays in the stored body or block, and out of a column of its own."""
    from eventlog.intake import read_body

    body = make_body(make_block(), {"message_id": "m-\x00", "event_type": "x"})
    body["request_id"] = "r-\x00"
    intake = read_body(json.dumps(body).encode(), APP_A)
    assert intake.request_id is None and len(intake.events) == 1
    assert [(r.reason, r.message_id) for r in intake.rejected] == [("invalid_block", None)]
    assert "m-\\u0000" in intake.rejected[0].payload
    plain = make_body(make_block())
    assert read_body(json.dumps(plain).encode(), APP_A).request_id == plain["request_id"]
