"""`notestore search`: its --json is the /search answer, page by page, on both backends; the
readable table shows the snippet's text with its matches, never the markup."""

from __future__ import annotations

import json

import pytest

from tests.helpers import make_block, make_body, settled, signed_post
from tests.server import write_config
from tests.test_cli_read import OPS, notestore

pytestmark = pytest.mark.backends("sqlite", "postgresql")

SEARCHED = ("notes", "comments", "mentions", "search")


@pytest.fixture
async def seeded(client, settings, tmp_path):  # type: ignore[no-untyped-def]
    blocks = [
        make_block(
            note_id=f"n{i}",
            action_time=1669200000.0 + i,
            event_detail=[
                {
                    "field_key": "description",
                    "add": [f"<p>Ghi chú <b>số {i}</b> về Đường &amp; phố</p>"],
                },
            ],
        )  # fmt: skip
        for i in range(5)
    ]
    status, _ = await signed_post(client, make_body(*blocks))
    assert status == 200
    await settled(settings, views_named=SEARCHED)
    url = {"database_url": settings.database_url} if settings.database_url else {}
    return client, write_config(tmp_path, {}, **url)  # data_dir = tmp_path/data, as settings'


async def test_json_pages_equal_the_http_pages(seeded):
    client, config = seeded
    cursor, pages = None, 0
    while True:
        more = ["--cursor", cursor] if cursor else []
        done = notestore(config, "search", "ghi chu duong", "--limit", "2", *more, "--json")
        assert done.returncode == 0, done.stderr
        query = {"q": "ghi chu duong", "limit": "2", **({"cursor": cursor} if cursor else {})}
        resp = await client.get("/search", params=query, headers=OPS)
        answer = json.loads(done.stdout)
        assert answer == await resp.json() and len(answer["items"]) <= 2
        pages += 1
        if (cursor := answer["next_cursor"]) is None:
            break
    assert pages == 3


async def test_readable_output_shows_the_text_around_the_match(seeded):
    _, config = seeded
    done = notestore(config, "search", "so 3")
    assert done.returncode == 0, done.stderr
    assert "Ghi chú số 3 về Đường & phố" in done.stdout and "n3" in done.stdout
    assert "<mark>" not in done.stdout and "&amp;" not in done.stdout


@pytest.mark.parametrize("args", [["!!!"], ["a", "--limit", "0"], ["a", "--cursor", "garbage"]])
async def test_bad_input_is_a_one_line_error(seeded, args):
    _, config = seeded
    done = notestore(config, "search", *args)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
