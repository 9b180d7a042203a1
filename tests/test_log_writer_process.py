"""The log writer process and its wire: what serve's workers rely on, tested on their own.

A real writer process on a real unix socket, real WriterClients, a real log.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.config import fingerprint
from eventlog.append import Delivery, Outcome
from eventlog.intake import read_body
from eventlog.wire import BadFrame, frame, parse_reply, parse_request, reply, request, take_frames
from eventlog.writer import LogUnavailable
from eventlog.writer_client import WriterClient
from tests.helpers import APP_A, ROOT, encode, make_block, make_body, sample, secret_for, signature


def delivery(body: dict[str, object] | bytes, app_id: str = APP_A) -> Delivery:
    raw = body if isinstance(body, bytes) else encode(body)
    key = fingerprint(secret_for(app_id))
    return Delivery(time.time(), app_id, key, signature(raw, app_id), raw, read_body(raw, app_id))


def mixed_deliveries() -> list[Delivery]:
    """Accepted events, a rejected block beside a good one, a body that is not JSON."""
    bad_block = {"message_id": "m-bad", "event_type": "note_create", "data_event": {}}
    return [
        delivery(sample("note_create")),
        delivery(make_body(make_block(), bad_block)),
        delivery(b"\xff not json"),
        delivery(make_body(make_block("comment_create", note_id="n1"), make_block())),
    ]


def test_a_delivery_and_an_outcome_cross_the_wire_unchanged() -> None:
    for d in mixed_deliveries():
        assert parse_request(request(7, d)) == (7, d)
    outcome = Outcome(2, 1, 1, [5, 6], ["note_create", "note_update"], ["conflict"])
    assert parse_reply(reply(3, outcome)) == (3, outcome)
    assert parse_reply(reply(4, LogUnavailable("disk full"))) == (4, "disk full")


def test_frames_split_anywhere_come_out_whole_and_in_order() -> None:
    rows = [request(n, d) for n, d in enumerate(mixed_deliveries())]
    stream = b"".join(frame(r) for r in rows)
    for step in (1, 7, 100, len(stream)):
        buffer, got = bytearray(), []
        for start in range(0, len(stream), step):
            buffer += stream[start : start + step]
            got += take_frames(buffer)
        assert got == rows
        assert buffer == b""


def test_a_garbled_frame_or_row_is_refused() -> None:
    with pytest.raises(BadFrame):
        take_frames(bytearray(b"\x00\x00\x00\x03\xff\xfe\xfd"))
    for row in [(1, 2), "text", (1, *request(0, mixed_deliveries()[0])[1:-1], [(1,)])]:
        with pytest.raises(BadFrame):
            parse_request(row)


class WriterProcess:
    """`eventlog.writer_process.main` in a real child process."""

    def __init__(self, tmp_path: Path) -> None:
        self.data_dir = tmp_path / "data"
        self.socket = tmp_path / "writer.sock"
        code = (
            "import sys; from pathlib import Path; from eventlog.writer_process import main;"
            " main(Path(sys.argv[1]), Path(sys.argv[2]))"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(self.data_dir), str(self.socket)], cwd=ROOT
        )
        deadline = time.monotonic() + 20
        while not self.socket.exists():
            assert self.proc.poll() is None and time.monotonic() < deadline, "writer did not start"
            time.sleep(0.02)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)

    def message_ids(self) -> list[str]:
        conn = sqlite3.connect(self.data_dir / "events.db")
        try:
            return [row[0] for row in conn.execute("SELECT message_id FROM events ORDER BY seq")]
        finally:
            conn.close()


@pytest.fixture
def writer(tmp_path: Path):  # type: ignore[no-untyped-def]
    process = WriterProcess(tmp_path)
    yield process
    if process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait()


async def test_concurrent_clients_each_get_their_own_outcome_once_committed(
    writer: WriterProcess,
) -> None:
    clients = [WriterClient(writer.socket) for _ in range(3)]
    bodies = [make_body(make_block(), make_block()) for _ in range(90)]
    try:
        outcomes = await asyncio.gather(
            *(clients[i % 3].append(delivery(body)) for i, body in enumerate(bodies))
        )
        again = await clients[0].append(delivery(bodies[0]))
    finally:
        for client in clients:
            client.close()
    assert [o.accepted for o in outcomes] == [2] * 90
    assert again.as_answer() == {"accepted": 0, "duplicates": 2, "quarantined": 0}
    sent = {b["message_id"] for body in bodies for b in body["block_event"]}  # type: ignore[union-attr]
    logged = writer.message_ids()
    assert sorted(logged) == sorted(sent)
    seqs = sorted(seq for o in outcomes for seq in o.seqs)
    assert seqs == list(range(1, 181))
    assert writer.stop() == 0


async def test_a_garbled_connection_is_dropped_and_other_workers_carry_on(
    writer: WriterProcess,
) -> None:
    rogue = socket.socket(socket.AF_UNIX)
    rogue.connect(str(writer.socket))
    rogue.sendall(frame(("not", "a", "delivery")))
    rogue.settimeout(10)
    assert rogue.recv(100) == b""  # hung up on, without an answer
    rogue.close()
    client = WriterClient(writer.socket)
    try:
        outcome = await client.append(delivery(make_body()))
    finally:
        client.close()
    assert outcome.accepted == 1
    assert len(writer.message_ids()) == 1


def test_sigterm_commits_everything_already_sent(writer: WriterProcess) -> None:
    bodies = [make_body() for _ in range(50)]
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(writer.socket))
    time.sleep(0.2)  # accepted
    # Frozen, so the stop signal and the requests are pending together when it resumes.
    writer.proc.send_signal(signal.SIGSTOP)
    sock.sendall(b"".join(frame(request(n, delivery(b))) for n, b in enumerate(bodies)))
    writer.proc.send_signal(signal.SIGTERM)
    writer.proc.send_signal(signal.SIGCONT)
    assert writer.proc.wait(timeout=20) == 0
    sock.close()
    sent = [body["block_event"][0]["message_id"] for body in bodies]  # type: ignore[index]
    assert writer.message_ids() == sent


def test_a_worker_hanging_up_mid_frame_has_its_whole_requests_committed(
    writer: WriterProcess,
) -> None:
    bodies = [make_body() for _ in range(4)]
    frames = [frame(request(n, delivery(b))) for n, b in enumerate(bodies)]
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(writer.socket))
    sock.sendall(b"".join(frames[:3]) + frames[3][: len(frames[3]) // 2])
    sock.close()
    sent = [body["block_event"][0]["message_id"] for body in bodies[:3]]  # type: ignore[index]
    deadline = time.monotonic() + 10
    while writer.message_ids() != sent:
        assert time.monotonic() < deadline, writer.message_ids()
        time.sleep(0.05)
    assert writer.stop() == 0
    assert writer.message_ids() == sent  # and never the half-sent fourth


def test_answers_queued_at_stop_still_reach_a_slow_worker(writer: WriterProcess) -> None:
    """More answers than a socket buffer holds, to a worker that reads only after SIGTERM."""
    count = 6000
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(writer.socket))
    one = delivery(make_body())
    sock.sendall(b"".join(frame(request(n, one)) for n in range(count)))  # 1 new, then duplicates
    time.sleep(1.0)  # committed and answered into a full socket buffer
    writer.proc.send_signal(signal.SIGTERM)
    buffer, answers = bytearray(), []
    sock.settimeout(20)
    while data := sock.recv(1 << 16):
        buffer += data
        answers += [parse_reply(row) for row in take_frames(buffer)]
    sock.close()
    assert writer.proc.wait(timeout=20) == 0
    assert [number for number, _ in answers] == list(range(count))
    outcomes = [outcome for _, outcome in answers]
    assert all(isinstance(o, Outcome) for o in outcomes)
    assert sum(o.accepted for o in outcomes) == 1  # type: ignore[union-attr]
    assert sum(o.duplicates for o in outcomes) == count - 1  # type: ignore[union-attr]


async def test_a_writer_that_never_answers_times_out_as_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, stream: asyncio.StreamWriter) -> None:
        held.append(stream)
        while await reader.read(65536):
            pass

    server = await asyncio.start_unix_server(swallow, path=str(path))
    client = WriterClient(path, reply_timeout=0.3)
    try:
        with pytest.raises(LogUnavailable, match="did not confirm within 0.3 s"):
            await asyncio.wait_for(client.append(delivery(make_body())), 10)
        assert client.healthy  # a slow writer is not a failed commit
    finally:
        client.close()
        for stream in held:
            stream.close()
        server.close()


async def test_a_writer_process_gone_mid_request_answers_unavailable(
    writer: WriterProcess,
) -> None:
    client = WriterClient(writer.socket)
    try:
        await client.append(delivery(make_body()))  # connected
        writer.proc.kill()
        writer.proc.wait()
        with pytest.raises(LogUnavailable):
            await asyncio.wait_for(client.append(delivery(make_body())), 10)
    finally:
        client.close()
    assert len(writer.message_ids()) == 1  # the first, committed before the kill
