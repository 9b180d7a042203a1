"""`notestore serve` as processes: workers, the log's writer, the projectors, and their supervisor."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app.config import Settings, usable_cpus
from app.lock import projectors_running, serve_running
from app.signing import SIGNATURE_HEADER
from app.web import create_app
from eventlog.db import open_log
from tests.helpers import (
    SECRETS,
    make_block,
    make_body,
    signature,
    signed_post,
    wait_until,
)
from tests.server import Server, write_config
from tests.test_concurrency_and_kill import _fire, logged_message_ids


def serving_line(server: Server) -> dict[str, Any]:
    for line in server.log_path.read_text().splitlines():
        if '"serving"' in line:
            return dict(json.loads(line))
    raise AssertionError("serve logged no serving line")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def healthz_ok(server: Server) -> bool:
    try:
        with urllib.request.urlopen(f"{server.url}/healthz", timeout=2) as resp:
            return resp.status == 200
    except OSError:  # HTTPError (503) included
        return False


def metric(server: Server, line_start: str) -> float:
    with urllib.request.urlopen(f"{server.url}/metrics") as resp:
        text = resp.read().decode()
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(line_start))


async def post_many(url: str, count: int) -> list[str]:
    acked: list[str] = []
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(_fire(session, url, acked, count // 16) for _ in range(16)))
    return acked


async def test_workers_share_one_log_and_one_metrics_page(tmp_path: Path) -> None:
    with Server(write_config(tmp_path, SECRETS, workers=3)) as server:
        pids = serving_line(server)["pids"]
        assert len(pids["workers"]) == 3 and all(map(alive, pids["workers"]))
        assert alive(pids["log_writer"]) and alive(pids["projectors"])
        acked = await post_many(f"{server.url}/webhooks/mobio", 480)
        assert len(acked) == 480
        # Each scrape lands on one worker; every one of them counts all workers' deliveries,
        # once each worker has written its tally (app.metrics.FLUSH_S): the first scrape to
        # see all 480 means every worker has.
        wait_until(lambda: metric(server, 'notestore_deliveries_total{outcome="ok"}') == 480)
        for _ in range(6):
            assert metric(server, 'notestore_deliveries_total{outcome="ok"}') == 480
        assert metric(server, "notestore_group_commit_deliveries_sum") == 480
        answered_by = {
            json.loads(line).get("worker")
            for line in server.log_path.read_text().splitlines()
            if '"event":"delivery"' in line
        }
        assert len(answered_by) >= 2, answered_by  # SO_REUSEPORT spread the connections
    logged = logged_message_ids(tmp_path / "data" / "events.db")
    assert set(logged) == set(acked) and set(logged.values()) == {1}


async def test_a_dead_worker_or_log_writer_is_replaced_and_nothing_acknowledged_is_lost(
    tmp_path: Path,
) -> None:
    with Server(write_config(tmp_path, SECRETS, workers=2)) as server:
        pids = serving_line(server)["pids"]
        url = f"{server.url}/webhooks/mobio"
        acked: list[str] = []
        async with aiohttp.ClientSession() as session:
            burst = asyncio.gather(*(_fire(session, url, acked, 100) for _ in range(16)))
            await asyncio.sleep(0.3)
            os.kill(pids["log_writer"], signal.SIGKILL)
            await asyncio.sleep(0.3)
            os.kill(pids["workers"][0], signal.SIGKILL)
            await burst
        # The supervisor logs each restart once the replacement is up: the burst may be
        # over by then.
        wait_until(
            lambda: (
                '"log_writer_died"' in (log := server.log_path.read_text())
                and ('"worker_died"' in log)
            )
        )
        # After the restarts the service takes deliveries again, on every worker.
        wait_until(lambda: healthz_ok(server))
        after = await post_many(url, 160)
        assert len(after) == 160
    logged = logged_message_ids(tmp_path / "data" / "events.db")
    assert set(acked + after) <= set(logged) and set(logged.values()) == {1}


def test_a_log_writer_dying_again_soon_is_restarted_after_a_pause(tmp_path: Path) -> None:
    with Server(write_config(tmp_path, SECRETS, workers=1)) as server:
        first = serving_line(server)["pids"]["log_writer"]
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: '"log_writer_died"' in server.log_path.read_text())
        died = [json.loads(line) for line in server.log_path.read_text().splitlines()
                if '"log_writer_died"' in line]  # fmt: skip
        assert "restart_in_s" not in died[0]  # the first death: restarted at once
        os.kill(died[0]["restarted_as"], signal.SIGKILL)
        wait_until(lambda: '"child_restarted"' in server.log_path.read_text())
        lines = [json.loads(line) for line in server.log_path.read_text().splitlines()]
        again = [line for line in lines if line.get("event") == "log_writer_died"][1]
        restarted = [line for line in lines if line.get("event") == "child_restarted"][0]
        assert again["restart_in_s"] == 1.0 and restarted["child"] == "log_writer"
        wait_until(lambda: healthz_ok(server))
        assert len(asyncio.run(post_many(f"{server.url}/webhooks/mobio", 32))) == 32


def test_sigkill_of_the_supervisor_takes_every_child_with_it(tmp_path: Path) -> None:
    server = Server(write_config(tmp_path, SECRETS, workers=2)).start()
    pids = serving_line(server)["pids"]
    children = [*pids["workers"], pids["log_writer"], pids["projectors"]]
    server.kill()
    wait_until(lambda: not any(map(alive, children)))
    data = tmp_path / "data"
    assert not serve_running(data) and not projectors_running(data)
    # and the data directory serves again at once
    with Server(server.config) as again:
        assert serving_line(again)["pids"]["log_writer"] != pids["log_writer"]


async def test_sigterm_during_a_burst_answers_no_503_and_cleans_up(tmp_path: Path) -> None:
    server = Server(write_config(tmp_path, SECRETS, workers=2)).start()
    started = serving_line(server)
    pids = started["pids"]
    statuses: list[int] = []
    acked: list[str] = []

    async def fire(session: aiohttp.ClientSession) -> None:
        for _ in range(200):
            block = make_block()
            raw = json.dumps(make_body(block)).encode()
            headers = {SIGNATURE_HEADER: signature(raw)}
            try:
                async with session.post(
                    f"{server.url}/webhooks/mobio", data=raw, headers=headers
                ) as r:
                    statuses.append(r.status)
                    if r.status == 200:
                        acked.append(block["message_id"])
            except (TimeoutError, aiohttp.ClientError):
                return  # the server stopped listening: never acknowledged

    async with aiohttp.ClientSession() as session:
        burst = asyncio.gather(*(fire(session) for _ in range(16)))
        await asyncio.sleep(0.5)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        await burst
    assert server.proc.wait(timeout=30) == 0
    # Workers drain first and the writer commits what they sent: no request is failed.
    assert statuses and set(statuses) == {200}
    logged = logged_message_ids(tmp_path / "data" / "events.db")
    assert set(acked) <= set(logged) and set(logged.values()) == {1}
    assert not any(map(alive, [*pids["workers"], pids["log_writer"], pids["projectors"]]))
    assert not Path(started["run_dir"]).exists()
    log = server.log_path.read_text()
    assert '"stopped"' in log and "Traceback" not in log


async def test_an_unreachable_log_writer_answers_503_and_stores_nothing(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", apps=SECRETS)
    open_log(settings.data_dir).close()  # as the supervisor does before starting workers
    app = create_app(settings, [], log_writer=tmp_path / "no-such-writer.sock")
    client = await aiohttp_client(app)
    status, answer = await signed_post(client, make_body(make_block()))
    assert status == 503
    assert "nothing was stored" in answer["error"]
    assert not logged_message_ids(settings.events_path)
    health = await client.get("/healthz")
    assert health.status == 503


@pytest.mark.parametrize("workers", [0, 65])
def test_workers_setting_is_bounded(tmp_path: Path, workers: int) -> None:
    with pytest.raises(ValueError):
        Settings(data_dir=tmp_path, workers=workers)


def test_a_second_serve_cannot_share_the_port(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    with Server(write_config(tmp_path / "one", SECRETS)) as first:
        config = write_config(tmp_path / "two", SECRETS)
        second = subprocess.run(
            [sys.executable, "-m", "app", "serve", "--config", str(config), "--port", str(first.port)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert second.returncode != 0
        assert f"cannot listen on 127.0.0.1:{first.port}" in second.stderr


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("max 100000\n", None),  # no quota: the affinity mask decides
        ("150000 100000\n", 2),  # 1.5 CPUs: two workers share it
        ("50000 100000\n", 1),
        ("not a quota line", None),
    ],
)
def test_default_workers_follow_the_cpus_this_process_may_use(
    tmp_path: Path, cpu_max: str, expected: int | None
) -> None:
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    mine = len(os.sched_getaffinity(0))
    assert usable_cpus(path) == (mine if expected is None else min(mine, expected))
    assert usable_cpus(tmp_path / "absent") == mine
