"""`notestore serve` on PostgreSQL across a restart of the server: the writer, the projector
process (its runner, its listener, its lease) and the query pool all come back by themselves;
no delivery made after the restart is refused and no view stays behind."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from app.signing import SIGNATURE_HEADER
from projections.storage import Storage
from tests import pg
from tests.helpers import SECRETS, make_block, make_body, signature, wait_until
from tests.server import Server, write_config
from tests.test_two_instances import TOKEN, logged, settled

pg_server, pg_database, pg_url = pg.pg_server, pg.pg_database, pg.pg_url


def post(server: Server, block: dict[str, Any]) -> dict[str, Any]:
    raw = json.dumps(make_body(block)).encode()
    request = urllib.request.Request(
        f"{server.url}/webhooks/mobio", data=raw, headers={SIGNATURE_HEADER: signature(raw)}
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return dict(json.loads(resp.read()))


def get(server: Server, path: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{server.url}{path}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        return exc.code, dict(json.loads(exc.read()))


def test_serve_comes_back_by_itself_after_postgresql_restarts(
    tmp_path: Path, pg_server: pg.PgServer, pg_url: str
) -> None:
    storage = Storage(tmp_path / "unused", pg_url)
    server = Server(write_config(tmp_path, SECRETS, {TOKEN: ["*"]}, database_url=pg_url)).start()
    try:
        before = [make_block("note_create", note_id=f"before-{i}") for i in range(10)]
        assert all(post(server, b)["accepted"] == 1 for b in before)
        wait_until(lambda: settled(storage), 60, "the views before the restart")
        assert get(server, "/notes/before-0")[0] == 200  # the query pool has its connections

        pg.restart_cluster(pg_server)

        # every session was ended: the first answers after the restart are not refused
        after = [make_block("note_create", note_id=f"after-{i}") for i in range(10)]
        assert [post(server, b)["accepted"] for b in after] == [1] * 10
        assert get(server, "/notes/before-9")[0] == 200
        wait_until(lambda: settled(storage), 60, "the views after the restart")
        assert get(server, "/notes/after-9")[0] == 200
        assert logged(storage) == {b["message_id"]: 1 for b in before + after}
        status, health = get(server, "/healthz")
        assert status == 200 and health["status"] == "ok", health
    finally:
        server.stop()
    assert "Traceback" not in server.log_path.read_text()
