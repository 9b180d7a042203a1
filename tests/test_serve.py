"""`notestore serve` as one process: its writer thread, its query pool, its projector process."""

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

from app.lock import projectors_running, serve_running
from app.signing import SIGNATURE_HEADER
from tests.helpers import (
    SECRETS,
    make_block,
    make_body,
    signature,
    wait_for,
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


def metric(server: Server, line_start: str) -> float:
    with urllib.request.urlopen(f"{server.url}/metrics") as resp:
        text = resp.read().decode()
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(line_start))


async def test_one_process_counts_every_delivery_on_its_metrics_page(tmp_path: Path) -> None:
    with Server(write_config(tmp_path, SECRETS, workers=3)) as server:
        started = serving_line(server)
        assert alive(started["pid"]) and alive(started["projectors_pid"])
        acked: list[str] = []
        async with aiohttp.ClientSession() as session:
            url = f"{server.url}/webhooks/mobio"
            await asyncio.gather(*(_fire(session, url, acked, 20) for _ in range(16)))
        assert len(acked) == 320
        assert metric(server, 'notestore_deliveries_total{outcome="ok"}') == 320
        assert metric(server, "notestore_group_commit_deliveries_sum") == 320
        assert metric(server, 'notestore_blocks_total{outcome="accepted"}') == 320
    log = [json.loads(line) for line in server.log_path.read_text().splitlines() if line[:1] == "{"]
    ignored = [line for line in log if line.get("event") == "workers_setting_ignored"]
    assert len(ignored) == 1 and ignored[0]["workers"] == 3 and ignored[0]["level"] == "warning"
    logged = logged_message_ids(tmp_path / "data" / "events.db")
    assert set(logged) == set(acked) and set(logged.values()) == {1}


def test_sigkill_of_serve_takes_its_projector_process_with_it(tmp_path: Path) -> None:
    server = Server(write_config(tmp_path, SECRETS)).start()
    projectors = serving_line(server)["projectors_pid"]
    server.kill()
    wait_until(lambda: not alive(projectors))
    data = tmp_path / "data"
    assert not serve_running(data) and not projectors_running(data)
    with Server(server.config) as again:  # and the data directory serves again at once
        assert serving_line(again)["projectors_pid"] != projectors


async def test_sigterm_during_a_burst_answers_no_503_and_stops_the_projectors(
    tmp_path: Path,
) -> None:
    server = Server(write_config(tmp_path, SECRETS)).start()
    projectors = serving_line(server)["projectors_pid"]
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
        await wait_for(lambda: len(acked) >= 50, 30, "the burst under way")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        await burst
    # (Whether any request was still in a handler at the signal is the machine's timing: a
    # request sent but not yet read by the server is refused by the closing socket, which
    # the client sees as an error, never as an answer. What must hold is below.)
    assert server.proc.wait(timeout=30) == 0
    # requests in flight are answered and the writer commits what it was handed
    assert statuses and set(statuses) == {200}
    logged = logged_message_ids(tmp_path / "data" / "events.db")
    assert set(acked) <= set(logged) and set(logged.values()) == {1}
    assert not alive(projectors)
    log = server.log_path.read_text()
    assert '"stopped"' in log and "Traceback" not in log


def _serve(config: Path, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", "serve", "--config", str(config), "--port", str(port)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_a_second_serve_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    with Server(write_config(tmp_path, SECRETS)) as first:
        second = _serve(first.config, 0)
        assert second.returncode != 0
        last = second.stderr.strip().splitlines()[-1]  # after the config's warnings
        assert "another notestore serve is running" in last and "Traceback" not in second.stderr


def test_a_second_serve_cannot_share_the_port(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    with Server(write_config(tmp_path / "one", SECRETS)) as first:
        second = _serve(write_config(tmp_path / "two", SECRETS), first.port)
        assert second.returncode != 0
        last = second.stderr.strip().splitlines()[-1]  # after the config's warnings
        assert (
            f"cannot listen on 127.0.0.1:{first.port}" in last and "Traceback" not in second.stderr
        )
