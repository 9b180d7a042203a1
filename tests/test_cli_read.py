"""The read commands: `--json` equals the HTTP answer; the default output is readable text."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests import pg
from tests.helpers import (
    SAMPLE_FILES,
    SECRETS,
    make_block,
    make_body,
    post_samples,
    settled,
    signed_post,
)
from tests.ops_kit import Backend, delivery_of
from tests.server import write_config

pg_server, pg_database, pg_url = pg.pg_server, pg.pg_database, pg.pg_url

OPS = {"Authorization": "Bearer ops-token"}
COMMENTED_NOTE = "63843fceb0d322e9a7678bec"


def notestore(config, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([sys.executable, "-m", "app", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "250"})  # fmt: skip


@pytest.fixture
async def seeded(client, settings, tmp_path):  # type: ignore[no-untyped-def]
    await post_samples(client)
    mention = make_block(note_id="n-m", action_time=1669200000.0, event_detail=[
        {"field_key": "account_mentions", "add": [["acc-1"]]},
        {"field_key": "description", "add": ["<div>Hello <b>team</b> &amp; co</div>"]},
    ])  # fmt: skip
    await signed_post(client, make_body(mention))
    await settled(settings)
    config = write_config(tmp_path, {})  # data_dir = tmp_path/data, as in the settings fixture
    return client, config


CASES = [
    (["note", "637dfa373e395b0cead72666"], "/notes/637dfa373e395b0cead72666"),
    (
        ["note", "637dfa373e395b0cead72666", "--as-of", "1669200439.676389"],
        "/notes/637dfa373e395b0cead72666?as_of=1669200439.676389",
    ),
    (["history", COMMENTED_NOTE], f"/notes/{COMMENTED_NOTE}/history"),
    (
        ["comments", COMMENTED_NOTE, "--include-deleted"],
        f"/notes/{COMMENTED_NOTE}/comments?include_deleted=true",
    ),
    (["mentions", "acc-1", "--limit", "5"], "/accounts/acc-1/mentions?limit=5"),
]


@pytest.mark.parametrize(
    ("args", "path"), CASES, ids=[c[0][0] + str(i) for i, c in enumerate(CASES)]
)
async def test_cli_json_equals_the_http_answer(seeded, args, path):
    client, config = seeded
    done = notestore(config, *args, "--json")
    assert done.returncode == 0, done.stderr
    resp = await client.get(path, headers=OPS)
    assert resp.status == 200
    assert json.loads(done.stdout) == await resp.json()


def test_cli_answers_the_same_on_postgresql_as_on_sqlite(tmp_path, pg_url):
    """The same deliveries in both backends' logs, views rebuilt: every read command's JSON
    is the same (on SQLite it is the HTTP answer, above)."""
    mention = make_block(note_id="n-m", action_time=1669200000.0, event_detail=[
        {"field_key": "account_mentions", "add": [["acc-1"]]},
        {"field_key": "description", "add": ["<div>Hello <b>team</b> &amp; co</div>"]},
    ])  # fmt: skip
    bodies = [json.loads(p.read_bytes()) for p in SAMPLE_FILES] + [make_body(mention)]
    deliveries = [delivery_of(body) for body in bodies]
    configs = []
    for name, url in (("sqlite", None), ("postgresql", pg_url)):
        folder = tmp_path / name
        folder.mkdir()
        backend = Backend(folder / "data", url)
        backend.append(deliveries)
        configs.append(backend.config(folder, SECRETS))
        assert notestore(configs[-1], "rebuild").returncode == 0
    for args, _ in CASES:
        sqlite, postgresql = (notestore(config, *args, "--json") for config in configs)
        assert sqlite.returncode == postgresql.returncode == 0, postgresql.stderr
        assert json.loads(postgresql.stdout) == json.loads(sqlite.stdout), args
    readable = notestore(configs[1], "mentions", "acc-1")
    assert "Hello team & co" in readable.stdout


async def test_readable_output_shows_text_not_html(seeded):
    _, config = seeded
    feed = notestore(config, "mentions", "acc-1")
    assert "Hello team & co" in feed.stdout and "<b>" not in feed.stdout
    timeline = notestore(config, "history", COMMENTED_NOTE)
    assert "2022-11-28 08:29:11 UTC" in timeline.stdout and "created → edited" in timeline.stdout


async def test_cli_errors_are_one_line(seeded):
    _, config = seeded
    for args in (
        ["note", "nope"],
        ["note", "x", "--as-of", "soon"],
        ["mentions", "a", "--limit", "0"],
    ):
        done = notestore(config, *args)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr


async def test_merchant_names_which_merchants_note_when_several_hold_the_id(seeded, settings):
    client, config = seeded
    theirs = make_body(make_block(note_id="637dfa373e395b0cead72666", merchant_id="merchant-b",
                                  event_detail=[{"field_key": "description", "add": ["theirs"]}]))  # fmt: skip
    theirs["merchant_id"] = "merchant-b"
    await signed_post(client, theirs)
    await settled(settings)
    for command in ("note", "history", "comments"):
        ambiguous = notestore(config, command, "637dfa373e395b0cead72666")
        assert ambiguous.returncode == 2 and "merchant-b" in ambiguous.stderr, ambiguous.stderr
        assert len(ambiguous.stderr.strip().splitlines()) == 1 and "--merchant" in ambiguous.stderr
    for args, path in (
        (["note", "637dfa373e395b0cead72666"], "/notes/637dfa373e395b0cead72666"),
        (["note", "637dfa373e395b0cead72666", "--as-of", "1769200000"],
         "/notes/637dfa373e395b0cead72666?as_of=1769200000"),
        (["history", "637dfa373e395b0cead72666"], "/notes/637dfa373e395b0cead72666/history"),
    ):  # fmt: skip
        done = notestore(config, *args, "--merchant", "merchant-b", "--json")
        sep = "&" if "?" in path else "?"
        resp = await client.get(f"{path}{sep}merchant_id=merchant-b", headers=OPS)
        assert done.returncode == 0 and json.loads(done.stdout) == await resp.json(), done.stderr
    note = json.loads(notestore(config, "note", "637dfa373e395b0cead72666", "--merchant", "merchant-b",
                                "--json").stdout)  # fmt: skip
    assert (note["merchant_id"], note["description"]) == ("merchant-b", "theirs")
