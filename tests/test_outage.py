"""Drills for issue 14 against a real `notestore serve`: PostgreSQL stopped during a burst,
serve killed with deliveries in its spool, and a full disk under the SQLite log. Every
delivery answered 200 ends in the log exactly once, with the time it was received."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from app.signing import SIGNATURE_HEADER
from eventlog.spool import read_stats
from projections.storage import Storage
from tests import pg
from tests.backends import held_write_lock
from tests.helpers import SECRETS, make_block, make_body, signature, wait_until
from tests.server import Server, write_config
from tests.test_two_instances import TOKEN, logged, settled, views_equal_a_rebuild

pg_server, pg_database, pg_url = pg.pg_server, pg.pg_database, pg.pg_url


def post(server: Server, note_id: str, padding: str = "") -> tuple[int, dict[str, Any], float]:
    """(status, answer, when sent) of one signed delivery of a note_create."""
    block = make_block("note_create", note_id=note_id, **({"padding": padding} if padding else {}))
    raw = json.dumps(make_body(block)).encode()
    request = urllib.request.Request(
        f"{server.url}/webhooks/mobio", data=raw, headers={SIGNATURE_HEADER: signature(raw)}
    )
    sent = time.time()
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, dict(json.loads(resp.read())), sent
    except urllib.error.HTTPError as exc:
        return exc.code, dict(json.loads(exc.read())), sent


def spool_empty(folder: Path) -> bool:
    stats = read_stats(folder)
    return stats is None or stats.waiting == 0


def received_times(storage: Storage) -> dict[str, float]:
    conn = storage.log_reader()
    try:
        return dict(conn.execute("SELECT note_id, received_at FROM events").fetchall())
    finally:
        conn.close()


def _pg_ctl(server: pg.PgServer, action: str) -> None:
    assert server.folder is not None
    command = [(action if arg == "stop" else arg) for arg in server.stop]
    if action == "start":  # on its port again (given at start, not in its config)
        port = str(urlsplit(server.admin_url).port)
        command = [a for a in command if a not in ("-m", "fast")]
        command += ["-l", str(server.folder / "server.log"), "-o", f"-p {port}"]
    done = subprocess.run(command, cwd=server.folder, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_postgresql_stopped_during_a_burst_loses_nothing(
    tmp_path: Path, pg_server: pg.PgServer, pg_url: str
) -> None:
    if not pg_server.started_here:
        pytest.skip("stopping the server needs a PostgreSQL these tests started")
    storage = Storage(tmp_path / "data", pg_url)
    config = write_config(
        tmp_path, SECRETS, {TOKEN: ["*"]}, database_url=pg_url, log_commit_timeout_ms=500
    )
    answers: dict[str, tuple[int, float]] = {}
    with Server(config) as server:
        for i in range(5):
            status, _, sent = post(server, f"before-{i}")
            answers[f"before-{i}"] = (status, sent)
        _pg_ctl(pg_server, "stop")
        try:
            for i in range(10):
                status, answer, sent = post(server, f"during-{i}")
                assert answer.get("spooled") is True, answer
                answers[f"during-{i}"] = (status, sent)
        finally:
            _pg_ctl(pg_server, "start")
        for i in range(5):
            status, _, sent = post(server, f"after-{i}")
            answers[f"after-{i}"] = (status, sent)
        wait_until(lambda: spool_empty(tmp_path / "data"), 60, "the spool drained")
        wait_until(lambda: settled(storage), 60, "the views caught up")
    assert {status for status, _ in answers.values()} == {200}
    assert set(logged(storage).values()) == {1} and len(logged(storage)) == len(answers)
    times = received_times(storage)
    for note_id, (_, sent) in answers.items():  # received then, not when drained
        assert sent <= times[note_id] <= sent + 5, note_id
    views_equal_a_rebuild(storage)
    verified = subprocess.run(
        ["notestore", "verify", "--config", str(config)], capture_output=True, text=True
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_serve_killed_with_a_full_spool_drains_it_when_started_again(tmp_path: Path) -> None:
    config = write_config(tmp_path, SECRETS, {TOKEN: ["*"]}, log_commit_timeout_ms=200)
    data = tmp_path / "data"
    storage = Storage(data, None)
    server = Server(config).start()
    try:
        assert post(server, "first")[0] == 200
        with held_write_lock(storage):
            answers = [post(server, f"n-{i}") for i in range(8)]
            assert [a[1].get("spooled") for a in answers] == [True] * 8
            server.kill()  # nothing of the spool drained yet: the log is held
        assert not spool_empty(data)
        server = Server(config).start()
        wait_until(lambda: spool_empty(data), 60, "the spool drained after the restart")
        wait_until(lambda: settled(storage), 60, "the views caught up")
    finally:
        server.stop()
    counts = logged(storage)
    assert len(counts) == 9 and set(counts.values()) == {1}
    views_equal_a_rebuild(storage)


@contextlib.contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    folder.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs for the full-disk drill: {mounted.stderr!r}")
        pytest.skip("mounting a tmpfs needs root (the full-disk drill)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> Path:
    """Fill the disk of `folder` to the last byte; the file to remove to free it."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 512, 1):  # to the last byte
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_under_the_log_with_the_spool_elsewhere_loses_nothing(
    tmp_path: Path,
) -> None:
    with small_disk(tmp_path / "disk", "8m") as disk:
        data = disk / "data"
        spool = tmp_path / "spool"
        config = write_config(tmp_path, SECRETS, {TOKEN: ["*"]}, spool_dir=str(spool))
        config.write_text(config.read_text().replace('data_dir = "data"', f'data_dir = "{data}"'))
        storage = Storage(data, None)
        with Server(config) as server:
            assert post(server, "first")[0] == 200
            filler = fill(disk)
            answers = {f"n-{i}": post(server, f"n-{i}", padding="x" * 4000) for i in range(40)}
            assert {a[0] for a in answers.values()} == {200}
            assert any(a[1].get("spooled") for a in answers.values())
            filler.unlink()
            wait_until(lambda: spool_empty(spool), 60, "the spool drained once space was freed")
            wait_until(lambda: settled(storage), 60, "the views caught up")
        counts = logged(storage)
        assert len(counts) == 41 and set(counts.values()) == {1}


def test_a_full_disk_under_both_log_and_spool_never_answers_200_for_what_it_lost(
    tmp_path: Path,
) -> None:
    with small_disk(tmp_path / "disk", "8m") as disk:
        data = disk / "data"
        config = write_config(tmp_path, SECRETS, {TOKEN: ["*"]})
        config.write_text(config.read_text().replace('data_dir = "data"', f'data_dir = "{data}"'))
        storage = Storage(data, None)
        with Server(config) as server:
            assert post(server, "first")[0] == 200
            filler = fill(disk)
            answers = {f"n-{i}": post(server, f"n-{i}", padding="x" * 4000) for i in range(40)}
            statuses = {a[0] for a in answers.values()}
            assert statuses <= {200, 503} and 503 in statuses
            lost = sum(1 for a in answers.values() if a[0] == 503)
            metrics = urllib.request.urlopen(f"{server.url}/metrics", timeout=30).read().decode()
            assert f"notestore_deliveries_lost_total {float(lost)}" in metrics
            filler.unlink()
            wait_until(lambda: spool_empty(data), 60, "the spool drained once space was freed")
        kept = {n for n, a in answers.items() if a[0] == 200}
        assert sorted(_notes(storage)) == sorted(kept | {"first"})  # each 200 kept, once


def _notes(storage: Storage) -> list[str]:
    conn = storage.log_reader()
    try:
        return [r[0] for r in conn.execute("SELECT note_id FROM events")]
    finally:
        conn.close()


def test_two_instances_postgresql_restarted_mid_burst_one_killed_every_acknowledged_event_once(
    tmp_path: Path, pg_server: pg.PgServer, pg_url: str
) -> None:
    """Senders on both instances throughout; PostgreSQL restarts under them, then one
    instance dies by SIGKILL (its spool perhaps holding deliveries) and is started again."""
    if not pg_server.started_here:
        pytest.skip("restarting the server needs a PostgreSQL these tests started")
    storage = Storage(tmp_path / "unused", pg_url)
    servers = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        config = write_config(
            tmp_path / name, SECRETS, {TOKEN: ["*"]}, database_url=pg_url,
            log_commit_timeout_ms=500,
        )  # fmt: skip
        servers.append(Server(config).start())
    acked: list[str] = []
    stop = threading.Event()

    def send(server_of: list[Server], index: int, prefix: str) -> None:
        i = 0
        while not stop.is_set():
            note_id = f"{prefix}-{i}"
            i += 1
            with contextlib.suppress(OSError):  # a killed instance: not acknowledged
                status, _, _ = post(server_of[index], note_id)
                if status == 200:
                    acked.append(note_id)

    threads = [threading.Thread(target=send, args=(servers, n % 2, f"s{n}")) for n in range(4)]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: len(acked) >= 20, 60, "deliveries before the restart")
        pg.restart_cluster(pg_server)
        wait_until(lambda: len(acked) >= 60, 60, "deliveries after the restart")
        servers[0].kill()
        servers[0] = Server(servers[0].config).start()  # its spool drains now
        wait_until(lambda: len(acked) >= 100, 60, "deliveries after the kill")
        stop.set()
        for t in threads:
            t.join(60)
        for server in servers:
            wait_until(
                lambda s=server: spool_empty(s.config.parent / "data"), 60, "the spools drained"
            )
    finally:
        stop.set()
        for server in servers:
            server.stop()
    counts = Counter(_notes(storage))
    assert set(acked) <= set(counts), sorted(set(acked) - set(counts))[:5]
    assert set(counts.values()) == {1}
