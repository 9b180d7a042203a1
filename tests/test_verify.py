"""notestore verify passes on an intact log and names the first bad seq after any edit, on
SQLite and on PostgreSQL (where the edits are a superuser's, triggers disabled first)."""

from __future__ import annotations

import json

import pytest

from tests import pg
from tests.helpers import SAMPLE_FILES, SECRETS, make_block, make_body
from tests.ops_kit import Backend, backend_for, notestore
from tests.server import write_config

pg_server, pg_database, pg_url = pg.pg_server, pg.pg_database, pg.pg_url
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path) -> Backend:  # type: ignore[no-untyped-def]
    return backend_for(request, tmp_path)


@pytest.fixture
def logged(tmp_path, backend):  # type: ignore[no-untyped-def]
    config = backend.config(tmp_path, SECRETS)
    backend.append_bodies([json.loads(p.read_bytes()) for p in SAMPLE_FILES])
    backend.append_bodies([make_body(make_block(), make_block()) for _ in range(10)])
    return config, backend


def head_of(output: str) -> str:
    return next(line.split()[1] for line in output.splitlines() if line.startswith("head:"))


def test_an_intact_log_verifies(logged):
    config, _ = logged
    done = notestore(config, "verify")
    assert (
        done.returncode == 0
        and "OK" in done.stdout
        and "checked 26 events and 16 requests" in done.stdout
    ), done.stdout + done.stderr


def test_an_empty_log_verifies(tmp_path, backend):
    backend.append([])
    assert notestore(backend.config(tmp_path, SECRETS), "verify").returncode == 0


def test_the_same_deliveries_verify_to_the_same_head_on_both_backends(tmp_path, pg_url):
    from tests.ops_kit import delivery_of

    deliveries = [delivery_of(json.loads(p.read_bytes())) for p in SAMPLE_FILES]
    heads = []
    for name, url in (("sqlite", None), ("postgresql", pg_url)):
        folder = tmp_path / name
        folder.mkdir()
        backend = Backend(folder / "data", url)
        backend.append(deliveries)
        heads.append(head_of(notestore(backend.config(folder, SECRETS), "verify").stdout))
    assert heads[0] == heads[1]


def test_an_altered_event_is_named_by_its_seq(logged):
    config, backend = logged
    backend.tamper("UPDATE events SET block = replace(block, 'Nội dung 1', 'forged') WHERE seq = 1")
    done = notestore(config, "verify")
    assert done.returncode == 1 and "first bad seq: 1" in done.stdout and "FAILED" in done.stdout


def test_an_altered_column_anywhere_in_the_row_is_caught(logged):
    config, backend = logged
    backend.tamper("UPDATE events SET action_time = action_time + 1 WHERE seq = 9")
    assert "first bad seq: 9" in notestore(config, "verify").stdout


def test_a_row_deleted_from_the_middle_is_caught(logged):
    config, backend = logged
    backend.tamper("DELETE FROM events WHERE seq = 12")
    done = notestore(config, "verify")
    assert done.returncode == 1 and "first bad seq: 12" in done.stdout


def test_an_altered_request_body_is_caught(logged):
    config, backend = logged
    backend.tamper(
        "UPDATE requests SET body = CAST(replace(CAST(body AS TEXT), 'SALE', 'TICKET') AS BLOB)"
        " WHERE id = 1",
        "UPDATE requests SET body = convert_to(replace(convert_from(body, 'UTF8'), 'SALE',"
        " 'TICKET'), 'UTF8') WHERE id = 1",
    )
    done = notestore(config, "verify")
    assert done.returncode == 1 and "first bad request id: 1" in done.stdout
    assert "stored signature does not match" in done.stdout


def test_a_truncated_tail_fails_the_expected_head(logged):
    config, backend = logged
    head = head_of(notestore(config, "verify").stdout)
    assert notestore(config, "verify", "--expect-head", head).returncode == 0
    backend.tamper("DELETE FROM events WHERE seq > 20")
    alone = notestore(config, "verify")
    assert alone.returncode == 0  # a clean cut leaves a consistent chain...
    done = notestore(config, "verify", "--expect-head", head)
    assert (
        done.returncode == 1 and "no longer extends" in done.stdout
    )  # ...that the recorded head exposes


def test_a_rotated_out_secret_makes_requests_unverifiable_not_tampered(logged, tmp_path):
    _, backend = logged
    rotated = backend.config(tmp_path, {k: ["brand-new"] for k in SECRETS})
    done = notestore(rotated, "verify")
    assert done.returncode == 0 and "16 request(s) unverifiable" in done.stdout


def test_a_log_that_was_never_written_has_nothing_to_verify(tmp_path):
    done = notestore(write_config(tmp_path, SECRETS), "verify")  # SQLite only: no events.db
    assert done.returncode == 2 and "no log at" in done.stderr
