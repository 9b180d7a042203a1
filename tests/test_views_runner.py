"""The runner inside serve: tails, halts on a failing event and resumes, rebuilds on a new version."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from eventlog.read import LogEvent
from projections import runner as runner_module
from projections.base import ProjectionFailed
from projections.comments import CommentsProjector
from projections.notes import NotesProjector
from projections.runner import Runner
from projections.storage import Storage
from projections.store import last_error, live_row, open_views
from tests.helpers import make_block, make_body, signed_post, wait_for
from tests.views_kit import Views, append_blocks, fold_from_scratch


class PoisonedNotes(NotesProjector):
    """Fails on any event whose message_id says 'poison', until disarmed (the 'fix')."""

    armed = True

    # fold_into: what a live batch (apply) and a rebuild both fold with, so the poison
    # stops the view whichever meets it first
    def fold_into(self, conn, events: Sequence[LogEvent], suffix: str, states) -> None:  # type: ignore[no-untyped-def]
        for event in events:
            if self.armed and "poison" in event.message_id:
                raise ProjectionFailed(self.name, event, RuntimeError("cannot fold this"))
        super().fold_into(conn, events, suffix, states)


T0 = 1669200000.0  # a plausible action_time (intake quarantines times before 2000)


class NotesV2(NotesProjector):
    version = NotesProjector.version + 1


def checkpoint(data_dir: Path, name: str) -> int | None:
    views = open_views(data_dir)
    try:
        row = live_row(views, name)
        return row.checkpoint if row else None
    finally:
        views.close()


async def test_a_failing_projector_halts_at_its_event_and_resumes_once_fixed(tmp_path):
    append_blocks(tmp_path, [make_block(note_id="n1"), make_block(note_id="n2")])
    poisoned = PoisonedNotes()
    runner = Runner(
        Storage(tmp_path), [poisoned, CommentsProjector()], poll_interval=0.05, retry_interval=0.05
    )
    await runner.start()
    try:
        await wait_for(lambda: runner.is_ready("notes"))
        poison = make_block(note_id="n3")
        poison["message_id"] = "poison-1"
        append_blocks(
            tmp_path, [poison, make_block(note_id="n4"), make_block("note_comment_create")]
        )
        await wait_for(lambda: "notes" in runner.errors and checkpoint(tmp_path, "comments") == 5)
        assert "seq 3" in runner.errors["notes"] and "poison-1" in runner.errors["notes"]
        views = open_views(tmp_path)
        error = last_error(views, "notes")
        views.close()
        assert error is not None and (error.seq, error.message_id) == (3, "poison-1")
        # it never skips: the poison's seq is not applied, nor anything after it
        assert checkpoint(tmp_path, "notes") == 2
        poisoned.armed = False
        await wait_for(lambda: checkpoint(tmp_path, "notes") == 5 and "notes" not in runner.errors)
        assert runner.is_ready("notes")
    finally:
        await runner.stop()
    built = Views(tmp_path, NotesProjector())
    assert built.dump() == fold_from_scratch(tmp_path, NotesProjector())
    assert last_error(built.views, "notes") is None


async def health_is(health, status: str) -> bool:  # type: ignore[no-untyped-def]
    return (await health())["status"] == status  # type: ignore[no-any-return]


async def test_serve_wakes_projectors_on_commit_and_health_shows_a_stuck_one(
    aiohttp_client, settings
):
    poisoned = PoisonedNotes()
    from app.web import create_app

    client = await aiohttp_client(create_app(settings, [poisoned, CommentsProjector()]))
    block = make_block(note_id="n1")
    block["message_id"] = "poison-2"
    await signed_post(client, make_body(block))
    await signed_post(client, make_body(make_block("note_comment_create")))
    await wait_for(lambda: checkpoint(settings.data_dir, "comments") == 2)

    async def health() -> dict:  # type: ignore[type-arg]
        return await (await client.get("/healthz")).json()  # type: ignore[no-any-return]

    async def stuck_on_poison() -> bool:  # (a passing "database is locked" under load may
        report = await health()  # show first: the projector retries it, unlike the poison)
        return report["status"] == "degraded" and "poison-2" in " ".join(report["reasons"])

    await wait_for(stuck_on_poison)
    poisoned.armed = False
    await wait_for(lambda: checkpoint(settings.data_dir, "notes") == 2)
    assert (await health())["status"] == "ok"


async def test_a_new_projector_version_or_a_deleted_views_db_is_rebuilt_on_start(tmp_path):
    append_blocks(
        tmp_path,
        [make_block(note_id=f"n{i}", action_time=T0 + i) for i in range(30)],
        per_request=7,
    )
    runner = Runner(Storage(tmp_path), [NotesProjector()], poll_interval=0.05)
    await runner.start()
    await wait_for(lambda: runner.is_ready("notes"))
    await runner.stop()
    before = Views(tmp_path, NotesProjector()).dump()

    runner = Runner(Storage(tmp_path), [NotesV2()], poll_interval=0.05)
    await runner.start()
    await wait_for(lambda: runner.is_ready("notes"))
    await runner.stop()
    views = open_views(tmp_path)
    row = live_row(views, "notes")
    views.close()
    assert row is not None and (row.version, row.checkpoint) == (NotesV2.version, 30)
    assert Views(tmp_path, NotesV2()).dump() == before

    for leftover in tmp_path.glob("views.db*"):
        leftover.unlink()
    runner = Runner(Storage(tmp_path), [NotesProjector()], poll_interval=0.05)
    await runner.start()
    await wait_for(lambda: runner.is_ready("notes"))
    await runner.stop()
    assert Views(tmp_path, NotesProjector()).dump() == before


async def test_serve_restarts_a_projector_process_that_dies(tmp_path):
    """The real serve path: views fold in a child process, which comes back if it is killed."""
    import json
    import os
    import signal
    import subprocess

    from tests.helpers import SECRETS, signature
    from tests.server import Server, write_config

    def projector_children(pid: int) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(pid), "-f", "spawn_main"], capture_output=True, text=True
        )
        return [int(p) for p in out.stdout.split()]

    with Server(write_config(tmp_path, SECRETS)) as server:
        assert server.proc is not None
        (first,) = projector_children(server.proc.pid)
        os.kill(first, signal.SIGKILL)

        def replaced() -> bool:  # the monitor checks every second
            again = projector_children(server.proc.pid)  # type: ignore[union-attr]
            return bool(again) and first not in again

        await wait_for(replaced)
        raw = json.dumps(make_body(make_block(note_id="after-restart"))).encode()
        from app.send import post_signed

        assert (
            await asyncio.to_thread(
                post_signed, f"{server.url}/webhooks/mobio", raw, signature(raw)
            )
        )[0] == 200
        await wait_for(lambda: checkpoint(tmp_path / "data", "notes") == 1)


async def test_a_projector_process_dying_again_soon_is_restarted_after_a_pause(
    tmp_path, monkeypatch
):
    """ProcessMonitor (serve's, and an app run on its own) backs off when the child dies young.

    What the monitor decided is observed, not how long it took: the restart policy's
    own timing is tested with a fake clock in test_restarts.py.
    """
    import os
    import signal

    from app import views_monitor
    from app.restarts import FIRST_DELAY_S, Restarts
    from eventlog.db import open_log
    from projections.registry import all_projectors

    class Recorded(Restarts):
        """The real policy, noting each wait it hands the monitor."""

        def __init__(self) -> None:
            super().__init__()
            self.waits: list[float] = []

        def died(self, child: str) -> float:
            delay = super().died(child)
            self.waits.append(delay)
            return delay

    monkeypatch.setattr(views_monitor, "RESTART_CHECK_S", 0.05)
    open_log(tmp_path).close()
    monitor = views_monitor.ProcessMonitor(Storage(tmp_path), all_projectors())
    policy = monitor._policy = Recorded()
    await monitor.start()
    try:
        pids = []
        for restarts in (1, 2):
            child = monitor._child
            assert child is not None and child.pid is not None
            pids.append(child.pid)
            os.kill(child.pid, signal.SIGKILL)
            await wait_for(lambda n=restarts: monitor.restarts == n, timeout=20)
        # the first death: restarted at once; the second, young: after FIRST_DELAY_S
        assert policy.waits == [0.0, FIRST_DELAY_S]
        child = monitor._child
        assert child is not None and child.is_alive() and child.pid not in pids
        assert "process" not in monitor.errors
    finally:
        await monitor.stop()


async def test_once_serve_is_stopping_a_projector_process_that_exits_is_not_restarted(
    tmp_path, monkeypatch
):
    """A signal to the whole process group (Ctrl-C) stops the projector process too, while
    serve is still answering what it holds: that is no death to restart after."""
    import os
    import signal

    from app import views_monitor
    from eventlog.db import open_log
    from projections.registry import all_projectors

    monkeypatch.setattr(views_monitor, "RESTART_CHECK_S", 0.05)
    open_log(tmp_path).close()
    monitor = views_monitor.ProcessMonitor(Storage(tmp_path), all_projectors())
    await monitor.start()
    try:
        child = monitor._child
        assert child is not None and child.pid is not None
        monitor.stop_restarting()  # what serve's on_shutdown does
        os.kill(child.pid, signal.SIGTERM)
        await wait_for(lambda: not child.is_alive())
        watch = monitor._watch
        assert watch is not None
        await wait_for(watch.done)  # the watch has ended: nothing is left to restart it
        assert watch.cancelled() and monitor.restarts == 0 and monitor._child is child
    finally:
        await monitor.stop()


async def test_a_failure_while_checking_whether_to_rebuild_is_retried_not_fatal(
    tmp_path, monkeypatch
):
    """The version check reads the views too: when it fails (a connection the server dropped,
    a disk error), the projector records it and tries again; its task does not end."""
    append_blocks(tmp_path, [make_block(note_id="n1")])
    failures = iter([sqlite3.OperationalError("disk I/O error")])
    real = runner_module.needs_rebuild

    def flaky(views, projector):  # type: ignore[no-untyped-def]
        for exc in failures:
            raise exc
        return real(views, projector)

    monkeypatch.setattr(runner_module, "needs_rebuild", flaky)
    runner = Runner(Storage(tmp_path), [NotesProjector()], poll_interval=0.05, retry_interval=0.05)
    await runner.start()
    try:
        await wait_for(lambda: checkpoint(tmp_path, "notes") == 1, what="the view built anyway")
    finally:
        await runner.stop()


def test_projectors_opening_a_new_views_db_at_once_all_get_it(tmp_path):  # type: ignore[no-untyped-def]
    """serve's projectors start together and each opens views.db: on a new file, setting WAL
    mode from several connections at once answered "database is locked" without waiting
    (one projector then reported stuck until its retry). Every open must succeed."""
    import threading

    from projections.store import open_views

    failures: list[str] = []
    for attempt in range(100):
        folder = tmp_path / str(attempt)
        start = threading.Barrier(6)

        def open_once(folder: Path, start: threading.Barrier) -> None:
            start.wait()
            try:
                open_views(folder).close()
            except sqlite3.Error as exc:
                failures.append(repr(exc))

        threads = [threading.Thread(target=open_once, args=(folder, start)) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []
