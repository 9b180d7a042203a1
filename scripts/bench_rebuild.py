#!/usr/bin/env python
"""Rebuild benchmark: `notestore rebuild` of every view against a plain pass over the same log,
on SQLite and on PostgreSQL.

The baseline reads the log in seq order and json.loads every block, from the backend being
measured (on PostgreSQL: the events table of the PostgreSQL log, through psycopg). Targets,
on each backend: the rebuild's rate >= 0.25 x that backend's baseline, measured in the same
run (alternating); peak memory (max RSS) of the rebuild process <= 300 MB. On PostgreSQL that
is the `notestore rebuild` client process; the server's own backends are not counted.

    python scripts/bench_rebuild.py [--events 1000000] [--rounds 2]
                                    [--backend sqlite|postgresql|both] [--database-url URL]

PostgreSQL: by default a throwaway cluster is started as tests/pg.py starts one (as root,
as the `postgres` user); or give --database-url, a server where it may create a database
(dropped at the end). Each backend gets its own log, built by the same seeded workload (on
PostgreSQL through PostgresLogStore.append in batches of 5000; its build time is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    POSTGRESQL,
    SECRETS,
    SQLITE,
    add_backend_arguments,
    backends,
    build_log,
    build_pg_log,
    median,
    postgresql_server,
    scratch_database,
    verdict,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.server import write_config  # noqa: E402

RATIO_TARGET, MEMORY_TARGET_MB = 0.25, 300


def plain_pass(db: Path) -> float:
    """Events per second of reading the log by seq and decoding every block."""
    conn = sqlite3.connect(db)
    started, last, count = time.perf_counter(), 0, 0
    while rows := conn.execute(
        "SELECT seq, block FROM events WHERE seq > ? ORDER BY seq LIMIT 5000", (last,)
    ).fetchall():
        for _, block in rows:
            json.loads(block)
        count += len(rows)
        last = rows[-1][0]
    conn.close()
    return count / (time.perf_counter() - started)


def plain_pass_pg(url: str) -> float:
    """The same pass over the PostgreSQL log."""
    import psycopg

    conn = psycopg.connect(url, autocommit=True)
    started, last, count = time.perf_counter(), 0, 0
    while rows := conn.execute(
        "SELECT seq, block FROM events WHERE seq > %s ORDER BY seq LIMIT 5000", (last,)
    ).fetchall():
        for _, block in rows:
            json.loads(block)
        count += len(rows)
        last = rows[-1][0]
    conn.close()
    return count / (time.perf_counter() - started)


def rebuild(config: Path, events: int) -> tuple[float, float]:
    """(events per second per view replayed, peak RSS in MB) of a real `notestore rebuild`."""
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "app", "rebuild", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)  # this process's own peak, not all children's
        took = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            out.seek(0)
            raise SystemExit(f"rebuild failed: {out.read().decode(errors='replace')[-2000:]}")
    return events / took, usage.ru_maxrss / 1024


def measure(
    name: str, config: Path, baseline: Callable[[], float], events: int, rounds: int
) -> list[str]:
    """Alternating baseline and rebuild rounds on one backend; what missed a target."""
    plain, ours, peak = [], [], 0.0
    for number in range(rounds):
        plain.append(baseline())
        rate, peak_mb = rebuild(config, events)
        ours.append(rate)
        peak = max(peak, peak_mb)
        print(
            f"[{name}] round {number + 1}: plain pass {plain[-1]:,.0f} events/s, rebuild of all views {rate:,.0f} events/s, peak RSS {peak_mb:.0f} MB"
        )
    ratio = median(ours) / median(plain)
    print(
        f"[{name}] rebuild ratio: {ratio:.3f} (target >= {RATIO_TARGET}); peak memory {peak:.0f} MB (target <= {MEMORY_TARGET_MB} MB)"
    )
    failures = []
    if ratio < RATIO_TARGET:
        failures.append(f"{name}: ratio {ratio:.3f} below {RATIO_TARGET}")
    if peak > MEMORY_TARGET_MB:
        failures.append(f"{name}: peak memory {peak:.0f} MB above {MEMORY_TARGET_MB} MB")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    add_backend_arguments(parser)
    args = parser.parse_args()
    wanted = backends(args)
    failures: list[str] = []
    with postgresql_server(args.database_url, wanted) as admin_url:
        if SQLITE in wanted:
            with tempfile.TemporaryDirectory() as tmp:
                config = write_config(Path(tmp), SECRETS)
                build_log(Path(tmp) / "data", args.events)
                db = Path(tmp) / "data" / "events.db"
                failures += measure(
                    SQLITE, config, lambda: plain_pass(db), args.events, args.rounds
                )
        if POSTGRESQL in wanted:
            assert admin_url is not None
            with tempfile.TemporaryDirectory() as tmp, scratch_database(admin_url) as url:
                config = write_config(Path(tmp), SECRETS, database_url=url)
                took = build_pg_log(url, args.events)
                print(f"[{POSTGRESQL}] log of {args.events:,} events built in {took:.1f} s")
                failures += measure(
                    POSTGRESQL, config, lambda: plain_pass_pg(url), args.events, args.rounds
                )
    return verdict(failures)


if __name__ == "__main__":
    raise SystemExit(main())
