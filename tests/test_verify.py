"""notestore verify passes on an intact log and names the first bad seq after any edit."""

from __future__ import annotations

import json

import pytest

from tests.helpers import SAMPLE_FILES, SECRETS, make_block, make_body
from tests.ops_kit import notestore, tamper
from tests.server import write_config
from tests.views_kit import append_bodies


@pytest.fixture
def logged(tmp_path):  # type: ignore[no-untyped-def]
    config = write_config(tmp_path, SECRETS)
    data = tmp_path / "data"
    append_bodies(data, [json.loads(p.read_bytes()) for p in SAMPLE_FILES])
    append_bodies(data, [make_body(make_block(), make_block()) for _ in range(10)])
    return config, data / "events.db"


def head_of(output: str) -> str:
    return next(line.split()[1] for line in output.splitlines() if line.startswith("head:"))


def test_an_intact_log_verifies(logged):
    config, _ = logged
    done = notestore(config, "verify")
    assert (
        done.returncode == 0
        and "OK" in done.stdout
        and "checked 26 events and 16 requests" in done.stdout
    )


def test_an_empty_log_verifies(tmp_path):
    from eventlog.db import open_log

    open_log(tmp_path / "data").close()
    assert notestore(write_config(tmp_path, SECRETS), "verify").returncode == 0


def test_an_altered_event_is_named_by_its_seq(logged):
    config, db = logged
    tamper(db, "UPDATE events SET block = replace(block, 'Nội dung 1', 'forged') WHERE seq = 1")
    done = notestore(config, "verify")
    assert done.returncode == 1 and "first bad seq: 1" in done.stdout and "FAILED" in done.stdout


def test_an_altered_column_anywhere_in_the_row_is_caught(logged):
    config, db = logged
    tamper(db, "UPDATE events SET action_time = action_time + 1 WHERE seq = 9")
    assert "first bad seq: 9" in notestore(config, "verify").stdout


def test_a_row_deleted_from_the_middle_is_caught(logged):
    config, db = logged
    tamper(db, "DELETE FROM events WHERE seq = 12")
    done = notestore(config, "verify")
    assert done.returncode == 1 and "first bad seq: 12" in done.stdout


def test_an_altered_request_body_is_caught(logged):
    config, db = logged
    tamper(
        db,
        "UPDATE requests SET body = CAST(replace(CAST(body AS TEXT), 'SALE', 'TICKET') AS BLOB) WHERE id = 1",
    )
    done = notestore(config, "verify")
    assert done.returncode == 1 and "first bad request id: 1" in done.stdout
    assert "stored signature does not match" in done.stdout


def test_a_truncated_tail_fails_the_expected_head(logged):
    config, db = logged
    head = head_of(notestore(config, "verify").stdout)
    assert notestore(config, "verify", "--expect-head", head).returncode == 0
    tamper(db, "DELETE FROM events WHERE seq > 20")
    alone = notestore(config, "verify")
    assert alone.returncode == 0  # a clean cut leaves a consistent chain...
    done = notestore(config, "verify", "--expect-head", head)
    assert (
        done.returncode == 1 and "no longer extends" in done.stdout
    )  # ...that the recorded head exposes


def test_a_rotated_out_secret_makes_requests_unverifiable_not_tampered(logged, tmp_path):
    _, _ = logged
    rotated = write_config(tmp_path, {k: ["brand-new"] for k in SECRETS})
    done = notestore(rotated, "verify")
    assert done.returncode == 0 and "16 request(s) unverifiable" in done.stdout
