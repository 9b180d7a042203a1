"""(e) `notestore rebuild` while a real server keeps receiving ends with views equal to a fresh fold."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

from app.send import post_signed
from projections.registry import all_projectors
from tests.helpers import SECRETS, make_block, make_body, signature
from tests.server import Server, write_config
from tests.views_kit import Views, fold_from_scratch


def notestore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], capture_output=True, text=True, timeout=120
    )


def post_many(url: str, count: int, answers: list[int]) -> None:
    for i in range(count):
        note = f"n{i % 17}"
        detail = [
            {"field_key": "account_mentions", "add": [[f"acc-{i % 5}"]]},
            {"field_key": "description", "add": [f"text {i}"]},
        ]
        blocks = [
            make_block(
                "note_update_data", note_id=note, action_time=1000.0 + i % 50, event_detail=detail
            ),
            make_block(
                "note_comment_create",
                comment_id=f"c{i % 23}",
                action_time=float(i),
                event_detail=[{"field_key": "object_id", "add": [note]}],
            ),
        ]
        raw = json.dumps(make_body(*blocks)).encode()
        answers.append(post_signed(url, raw, signature(raw))[0])


def status(config) -> dict:  # type: ignore[no-untyped-def,type-arg]
    done = notestore("status", "--json", "--config", str(config))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_rebuild_while_posts_keep_arriving(tmp_path):
    config = write_config(tmp_path, SECRETS)
    with Server(config) as server:
        url = f"{server.url}/webhooks/mobio"
        answers: list[int] = []
        post_many(url, 150, answers)
        posting = threading.Thread(target=post_many, args=(url, 400, answers))
        posting.start()
        rebuilt = notestore("rebuild", "--config", str(config))
        second = notestore("rebuild", "notes", "--config", str(config))
        posting.join()
        assert rebuilt.returncode == 0 and "rebuilt notes, comments, mentions" in rebuilt.stdout, (
            rebuilt.stderr
        )
        assert second.returncode == 0, second.stderr
        assert answers.count(200) == 550
        deadline = time.monotonic() + 30
        while any(v["lag"] for v in status(config)["views"]):
            assert time.monotonic() < deadline, status(config)
            time.sleep(0.1)
    report = status(config)
    assert report["log"]["events"] == 1100
    assert all(v["checkpoint"] == 1100 and v["error"] is None for v in report["views"])
    data = tmp_path / "data"
    for projector in all_projectors():
        assert Views(data, projector).dump() == fold_from_scratch(data, projector), projector.name


def test_status_and_rebuild_explain_an_unknown_view_or_a_missing_log(tmp_path):
    config = write_config(tmp_path, SECRETS)
    missing = notestore("status", "--config", str(config))
    assert missing.returncode == 2 and "no log" in missing.stderr
    (tmp_path / "data").mkdir()
    from eventlog.db import open_log

    open_log(tmp_path / "data").close()
    unknown = notestore("rebuild", "nope", "--config", str(config))
    assert unknown.returncode == 2 and "unknown view nope" in unknown.stderr
    table = notestore("status", "--config", str(config))
    assert table.returncode == 0 and "not built yet" in table.stdout
