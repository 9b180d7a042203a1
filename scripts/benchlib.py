"""Shared by the benchmarks: building a realistic log fast, and timing helpers.

On PostgreSQL (`--backend`, `postgresql_server`, `scratch_database`, `build_pg_log`): a
throwaway cluster started as tests/pg.py starts one (or the server of `--database-url`), a
database of its own per log, and the log built through PostgresLogStore.append.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workload import TEMPLATES, Workload  # noqa: E402

from app.config import fingerprint  # noqa: E402
from app.signing import sign  # noqa: E402
from eventlog.append import Delivery, append_deliveries  # noqa: E402
from eventlog.db import open_log  # noqa: E402
from eventlog.intake import read_body  # noqa: E402

SECRETS = {t["app_id"]: [f"secret-{i}"] for i, t in enumerate(TEMPLATES)}


def signed(body: dict) -> tuple[str, bytes]:  # type: ignore[type-arg]
    """A body's exact bytes and the signature Mobio would send with them."""
    raw = json.dumps(body, ensure_ascii=False).encode()
    return sign(body["app_id"], raw, SECRETS[body["app_id"]][0]), raw


def build_log(data_dir: Path, events: int, seed: int = 3, progress: bool = True) -> None:
    """Append `events` realistic deliveries (one block each) through the log's own append path."""
    conn = open_log(data_dir)
    conn.execute("PRAGMA synchronous = OFF")  # benchmark data: no need to fsync while building
    work = Workload(seed=seed)
    started = time.perf_counter()
    for start in range(0, events, 1000):
        batch = []
        for _ in range(min(1000, events - start)):
            body = work.body()
            signature, raw = signed(body)
            app_id = body["app_id"]
            secret = fingerprint(SECRETS[app_id][0])
            batch.append(
                Delivery(time.time(), app_id, secret, signature, raw, read_body(raw, app_id))
            )
        append_deliveries(conn, batch)
        if progress and (start // 1000) % 50 == 0:
            rate = (start + len(batch)) / (time.perf_counter() - started)
            print(f"  building log: {start + len(batch):,}/{events:,} ({rate:,.0f}/s)", flush=True)
    conn.close()


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def verdict(failures: list[str]) -> int:
    """Print PASS or what failed; the exit status: 1 when a target is missed."""
    print("PASS" if not failures else "FAIL: " + "; ".join(failures))
    return 1 if failures else 0


def wait_for_views(url: str, timeout: float = 600) -> None:
    """serve builds or rebuilds views on start: wait until none is catching up."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/healthz") as resp:
            if not json.loads(resp.read())["views_catching_up"]:
                return
        time.sleep(0.05)
    raise SystemExit("views did not catch up")


# --- both backends -------------------------------------------------------------------------

SQLITE, POSTGRESQL = "sqlite", "postgresql"


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend", choices=(SQLITE, POSTGRESQL, "both"), default="both",
        help="where the log and views live (default: both, one after the other)",
    )  # fmt: skip
    parser.add_argument(
        "--database-url",
        help="postgresql:// URL of a role that may CREATE DATABASE; the benchmark makes and "
        "drops databases of its own there (default: a throwaway cluster, as tests/pg.py)",
    )


def backends(args: argparse.Namespace) -> list[str]:
    return [SQLITE, POSTGRESQL] if args.backend == "both" else [args.backend]


@contextmanager
def postgresql_server(database_url: str | None, wanted: list[str]) -> Iterator[str | None]:
    """An admin URL of a PostgreSQL server when `wanted` names it, else None: `database_url`
    as given, or a throwaway cluster (tests/pg.py's), stopped and removed on leaving."""
    if POSTGRESQL not in wanted:
        yield None
        return
    if database_url:
        yield database_url
        return
    from tests.pg import _start_cluster, _stop_cluster

    started = time.perf_counter()
    server = _start_cluster()
    print(f"  throwaway PostgreSQL cluster up in {time.perf_counter() - started:.1f} s", flush=True)
    try:
        yield server.admin_url
    finally:
        _stop_cluster(server)


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A new database on admin_url's server, dropped (even if still in use) on leaving."""
    import psycopg
    from psycopg import sql

    from tests.pg import url_for

    name = f"notestore_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield url_for(admin_url, dbname=name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def make_delivery(work: Workload) -> Delivery:
    """One realistic delivery, signed and read as the receiver would."""
    body = work.body()
    signature, raw = signed(body)
    app_id = body["app_id"]
    secret = fingerprint(SECRETS[app_id][0])
    return Delivery(time.time(), app_id, secret, signature, raw, read_body(raw, app_id))


def build_pg_log(
    url: str, events: int, seed: int = 3, progress: bool = True, batch_size: int = 5000
) -> float:
    """As build_log, into the PostgreSQL database at `url` (migrated first), through
    PostgresLogStore.append in batches of `batch_size`; the seconds it took."""
    from projections.storage import Storage

    storage = Storage(Path("."), url)
    storage.prepare()
    store = storage.log_store()
    work = Workload(seed=seed)
    started = time.perf_counter()
    done, reported = 0, 0
    try:
        while done < events:
            batch = [make_delivery(work) for _ in range(min(batch_size, events - done))]
            store.append(batch)
            done += len(batch)
            if progress and (done - reported >= 50_000 or done == events):
                reported = done
                rate = done / (time.perf_counter() - started)
                print(f"  building PostgreSQL log: {done:,}/{events:,} ({rate:,.0f}/s)", flush=True)
    finally:
        store.close()
    return time.perf_counter() - started
