#!/usr/bin/env python
"""Crash drill: SIGKILL a real `notestore serve` under concurrent signed deliveries, several rounds.

Afterwards every delivery answered 200 must be in the log exactly once, the hash
chain must verify, and after a restart every view must equal a from-scratch rebuild.

    python scripts/crash_drill.py [--rounds 5] [--clients 32]
Prints its result; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.signing import SIGNATURE_HEADER  # noqa: E402
from projections.registry import all_projectors  # noqa: E402
from tests.helpers import SECRETS, make_block, make_body, signature  # noqa: E402
from tests.ops_kit import notestore  # noqa: E402
from tests.server import Server, write_config  # noqa: E402
from tests.views_kit import Views, fold_from_scratch  # noqa: E402


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
    stop = asyncio.Event()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        tasks = [
            asyncio.create_task(client(session, f"{server.url}/webhooks/mobio", acked, stop))
            for _ in range(clients)
        ]
        await asyncio.sleep(random.uniform(0.5, 2.0))
        server.kill()  # SIGKILL, mid-burst
        stop.set()
        await asyncio.gather(*tasks)


def wait_for_views(config: Path, head: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = json.loads(notestore(config, "status", "--json").stdout)
        if all(v["checkpoint"] == head for v in report["views"]):
            return
        time.sleep(0.2)
    raise SystemExit("views did not catch up after the restart")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=32)
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
        config = write_config(Path(folder), SECRETS)
        acked: list[str] = []
        for number in range(1, args.rounds + 1):
            before = len(acked)
            asyncio.run(round_of_load(Server(config).start(), args.clients, acked))
            print(f"round {number}: {len(acked) - before} events acknowledged, then SIGKILL")
        with Server(config):
            data = Path(folder) / "data"
            conn = sqlite3.connect(data / "events.db")
            logged = Counter(r[0] for r in conn.execute("SELECT message_id FROM events"))
            head = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
            conn.close()
            wait_for_views(config, head)
        lost = [m for m in acked if logged[m] != 1]
        if lost:
            failures.append(f"{len(lost)} acknowledged events missing or doubled, e.g. {lost[:3]}")
        print(
            f"log: {len(logged)} events; {len(acked)} acknowledged, all present exactly once: {not lost}"
        )
        verified = notestore(config, "verify")
        print(verified.stdout.strip().splitlines()[-1])
        if verified.returncode != 0:
            failures.append("the hash chain does not verify")
        for projector in all_projectors():
            same = Views(data, projector).dump() == fold_from_scratch(data, projector)
            print(f"view {projector.name}: equals a from-scratch rebuild: {same}")
            if not same:
                failures.append(f"view {projector.name} differs from a rebuild")
    if args.keep:
        print(f"data kept: notestore verify --config {args.keep / 'notestore.toml'}")
    print("CRASH DRILL PASSED" if not failures else "CRASH DRILL FAILED: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
