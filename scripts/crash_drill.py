#!/usr/bin/env python
"""Crash drill: SIGKILL a real `notestore serve` under concurrent signed deliveries, several rounds.

Afterwards every delivery answered 200 must be in the log exactly once, the hash
chain must verify, and after a restart every view must equal a from-scratch rebuild.
Cases: `kill` (SQLite), `outage` (the log held by another process so deliveries go to
the spool, then SIGKILL while it holds them), `two-instances` (two serve on one
throwaway PostgreSQL, the server restarted mid-burst, one instance SIGKILLed), `copy-log`
(the migration: copy-log into a throwaway PostgreSQL SIGKILLed beside a receiving serve,
the last copy with serve stopped, then serve on PostgreSQL).

    python scripts/crash_drill.py [--case kill|outage|two-instances|copy-log] [--rounds 5]
Prints its result; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.signing import SIGNATURE_HEADER  # noqa: E402
from eventlog.spool import read_stats  # noqa: E402
from projections.storage import Storage  # noqa: E402
from tests.helpers import SECRETS, make_block, make_body, signature  # noqa: E402
from tests.ops_kit import notestore  # noqa: E402
from tests.pg import _start_cluster, _stop_cluster, restart_cluster  # noqa: E402
from tests.server import Server, write_config  # noqa: E402
from tests.test_two_instances import logged as logged_ids  # noqa: E402
from tests.test_two_instances import settled, views_equal_a_rebuild  # noqa: E402


async def client(
    session: aiohttp.ClientSession, url: str, acked: list[str], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        blocks = [make_block(random.choice(["note_create", "note_update_data", "note_comment_create"]),
                             action_time=random.uniform(1.6e9, 1.7e9),
                             event_detail=[{"field_key": "account_mentions", "add": [[f"acc-{random.randrange(9)}"]]}])
                  for _ in range(random.randint(1, 3))]  # fmt: skip
        raw = json.dumps(make_body(*blocks)).encode()
        try:
            async with session.post(
                url, data=raw, headers={SIGNATURE_HEADER: signature(raw)}
            ) as resp:
                if resp.status == 200:
                    acked.extend(b["message_id"] for b in blocks)
        except (aiohttp.ClientError, TimeoutError):
            await asyncio.sleep(0.01)  # the server is down: this one was never acknowledged


async def round_of_load(server: Server, clients: int, acked: list[str]) -> None:
    """Load, then SIGKILL mid-burst."""
    async with _load([server], clients, acked):
        await asyncio.sleep(random.uniform(0.5, 2.0))
        server.kill()


async def outage_round(server: Server, clients: int, acked: list[str], data: Path) -> None:
    """Load; the log then held by another process (deliveries go to the spool); SIGKILL
    while it is held, so the spool holds deliveries when serve dies."""
    async with _load([server], clients, acked):
        await asyncio.sleep(random.uniform(0.3, 1.0))
        conn = sqlite3.connect(data / "events.db", isolation_level=None, timeout=30)
        conn.execute("BEGIN IMMEDIATE")
        try:
            await asyncio.sleep(random.uniform(0.5, 1.5))
            server.kill()
        finally:
            conn.execute("ROLLBACK")
            conn.close()


async def two_instances_round(
    servers: list[Server], clients: int, acked: list[str], cluster: Any
) -> None:
    """Load over two instances on one PostgreSQL; the server restarted mid-burst; one
    instance killed; the other stopped."""
    async with _load(servers, clients, acked):
        await asyncio.sleep(random.uniform(0.3, 1.0))
        await asyncio.to_thread(restart_cluster, cluster)
        await asyncio.sleep(random.uniform(0.3, 1.0))
        random.choice(servers).kill()
    for server in servers:
        server.stop()


async def copy_round(
    server: Server, clients: int, acked: list[str], config: Path, url: str
) -> None:
    """Load; `copy-log` into PostgreSQL started beside serve and SIGKILLed at a random
    moment; then serve stopped."""
    async with _load([server], clients, acked):
        await asyncio.sleep(random.uniform(0.3, 1.0))
        copying = subprocess.Popen(
            [sys.executable, "-m", "app", "copy-log", "--to", url, "--chunk-rows", "100",
             "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        # killed once it has copied something (or has finished), a little later
        held = await asyncio.to_thread(_events_in, url)
        while copying.poll() is None and await asyncio.to_thread(_events_in, url) == held:
            await asyncio.sleep(0.02)
        await asyncio.sleep(random.uniform(0, 0.3))
        copying.kill()
        copying.wait()
    server.stop()


def _events_in(url: str) -> int:
    """How many events the PostgreSQL log holds (0 before it has a schema)."""
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('events') IS NOT NULL").fetchone()
        if not (exists and exists[0]):
            return 0
        found = conn.execute("SELECT count(*) FROM events").fetchone()
    return int(found[0]) if found else 0


def copy_log_case(folder: Path, rounds: int, clients: int, acked: list[str]) -> list[str]:
    """Rounds of copy-log killed beside a receiving serve on SQLite; then, serve stopped,
    the last copy-log, and serve on PostgreSQL checked as every case is."""
    failures: list[str] = []
    cluster = _start_cluster()
    try:
        config = write_config(folder, SECRETS, log_commit_timeout_ms=300)
        for number in range(1, rounds + 1):
            before = len(acked)
            server = Server(config).start()
            asyncio.run(copy_round(server, clients, acked, config, cluster.admin_url))
            copied = _events_in(cluster.admin_url)
            print(f"round {number}: {len(acked) - before} events acknowledged; copy-log"
                  f" SIGKILLed, {copied} events in PostgreSQL")  # fmt: skip
        with Server(config):  # what a round left in the spool drains into the SQLite log
            wait_until(lambda: spool_empty(folder / "data"), "the spool drained")
        last = notestore(config, "copy-log", "--to", cluster.admin_url)
        print("\n".join(line for line in last.stdout.splitlines() if line.startswith("copied")))
        if last.returncode != 0:
            failures.append(f"the last copy-log exited {last.returncode}: {last.stderr.strip()}")
        (folder / "pg").mkdir()
        pg_config = write_config(folder / "pg", SECRETS, database_url=cluster.admin_url)
        check([pg_config], Storage(folder / "pg" / "data", cluster.admin_url), acked, failures)
    finally:
        _stop_cluster(cluster)
    return failures


@contextlib.asynccontextmanager
async def _load(servers: list[Server], clients: int, acked: list[str]) -> AsyncIterator[None]:
    stop = asyncio.Event()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        tasks = [
            asyncio.create_task(
                client(session, f"{servers[n % len(servers)].url}/webhooks/mobio", acked, stop)
            )
            for n in range(clients)
        ]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not reached in {timeout:.0f} s")
        time.sleep(0.2)


def spool_empty(folder: Path) -> bool:
    stats = read_stats(folder)
    return stats is None or stats.waiting == 0


def check(configs: list[Path], storage: Storage, acked: list[str], failures: list[str]) -> None:
    """With every instance running again: spools drained, views caught up, then every
    acknowledged event once, the chain, and the views against a rebuild."""
    servers = [Server(config).start() for config in configs]
    try:
        for config in configs:
            wait_until(lambda c=config: spool_empty(c.parent / "data"), "the spool drained")
        wait_until(lambda: settled(storage), "the views caught up")
    finally:
        for server in servers:
            server.stop()
    logged = logged_ids(storage)
    lost = [m for m in acked if logged[m] != 1]
    if lost:
        failures.append(f"{len(lost)} acknowledged events missing or doubled, e.g. {lost[:3]}")
    print(
        f"log: {len(logged)} events; {len(acked)} acknowledged, all present exactly once: {not lost}"
    )
    verified = notestore(configs[0], "verify")
    print(verified.stdout.strip().splitlines()[-1] if verified.stdout.strip() else verified.stderr)
    if verified.returncode != 0:
        failures.append("the hash chain does not verify")
    try:
        views_equal_a_rebuild(storage)
        print("views: equal a from-scratch rebuild")
    except AssertionError as exc:
        failures.append(f"a view differs from a rebuild: {exc}")


CASES = ("kill", "outage", "two-instances", "copy-log")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument(
        "--case", choices=CASES, default="kill",
        help="kill: SIGKILL under load (SQLite); outage: the log held by another process, then"
        " SIGKILL with the spool holding deliveries (SQLite); two-instances: two serve on one"
        " throwaway PostgreSQL, the server restarted mid-burst and one instance killed;"
        " copy-log: copy-log into a throwaway PostgreSQL SIGKILLed beside a receiving serve,"
        " then run to the end with serve stopped, and serve started on PostgreSQL",
    )  # fmt: skip
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="keep the drill's config and data in DIR"
    )
    args = parser.parse_args()
    failures: list[str] = []
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=False)
    with (
        contextlib.nullcontext(str(args.keep))
        if args.keep
        else tempfile.TemporaryDirectory() as folder
    ):
        acked: list[str] = []
        if args.case == "copy-log":
            failures += copy_log_case(Path(folder), args.rounds, args.clients, acked)
        elif args.case == "two-instances":
            cluster = _start_cluster()
            try:
                configs = []
                for name in ("a", "b"):
                    (Path(folder) / name).mkdir()
                    configs.append(
                        write_config(
                            Path(folder) / name,
                            SECRETS,
                            database_url=cluster.admin_url,
                            log_commit_timeout_ms=500,
                        )  # fmt: skip
                    )
                storage = Storage(Path(folder) / "a" / "data", cluster.admin_url)
                for number in range(1, args.rounds + 1):
                    before = len(acked)
                    servers = [Server(c).start() for c in configs]
                    asyncio.run(two_instances_round(servers, args.clients, acked, cluster))
                    print(
                        f"round {number}: {len(acked) - before} events acknowledged,"
                        " PostgreSQL restarted, one instance SIGKILLed"
                    )
                check(configs, storage, acked, failures)
            finally:
                _stop_cluster(cluster)
        else:
            config = write_config(Path(folder), SECRETS, log_commit_timeout_ms=300)
            data = Path(folder) / "data"
            for number in range(1, args.rounds + 1):
                before = len(acked)
                server = Server(config).start()
                if args.case == "outage":
                    asyncio.run(outage_round(server, args.clients, acked, data))
                    what = "the log held, then SIGKILL with the spool holding deliveries"
                else:
                    asyncio.run(round_of_load(server, args.clients, acked))
                    what = "then SIGKILL"
                print(f"round {number}: {len(acked) - before} events acknowledged, {what}")
            check([config], Storage(data, None), acked, failures)
    if args.keep:
        print(f"data kept: notestore verify --config {args.keep / 'notestore.toml'}")
    print("CRASH DRILL PASSED" if not failures else "CRASH DRILL FAILED: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
