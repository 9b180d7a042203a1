#!/usr/bin/env python
"""Ingest on PostgreSQL against ingest on SQLite: `notestore serve` on each backend, same run.

Issue 13. In each round, four runs, each on a fresh store (a new database on the
PostgreSQL server for every PostgreSQL run, a fresh data_dir for every SQLite run), the
order of the two backends alternating from round to round:

  sqlite 1x64      one `notestore serve` on SQLite, 64 connections (one wrk)
  postgresql 2x32  two `notestore serve` instances (each its own data_dir) on one
                   PostgreSQL database, 32 connections each (two wrk at once, each on
                   its own distinct pre-signed bodies): 64 connections in all
  sqlite 1x16      one instance on SQLite, 16 connections
  postgresql 1x16  one instance on PostgreSQL, 16 connections

Each run gets a warm-up (its own distinct bodies) and then a steady phase of distinct
pre-signed deliveries (wrk, scripts/load.py). Measured: accepted (answered 200) req/s,
summed over the instances; p50/p99 (the worst instance's); CPU µs per delivery of the
whole path, from /proc (utime+stime, all threads, sampled before and after the steady
phase): every serve process tree, plus on PostgreSQL the server's postmaster and all its
children (backends, walwriter, checkpointer, autovacuum); and after the instances stop,
every event exactly once in the log (distinct message_ids = rows, as many as were
answered 200 up to what wrk left in flight) and, on PostgreSQL, the chain and stored
signatures verifying (`notestore verify --config ...`; if that command fails to run,
eventlog.verify.verify_log over projections.storage.Storage(...).log_reader(), and the
report says so).

Targets (issue 13), exit 1 naming each one missed:
  - postgresql 2x32 accepted rate >= 0.8 x sqlite 1x64's (median of the rounds' paired ratios)
  - postgresql 2x32 p99 <= 50 ms (the worst instance's; median of the rounds)
  - postgresql 2x32 every answer 200, every event once, the chain verifies (every round)
  - postgresql 1x16 CPU per delivery <= 1.25 x sqlite 1x16's (median of paired ratios)

The PostgreSQL server: by default a throwaway PostgreSQL cluster started for the run
(tests/pg.py: as the `postgres` user when root, on a free loopback port), switched to
durable settings (fsync, full_page_writes, synchronous_commit on: SQLite's log runs with
synchronous=FULL) unless --no-fsync; stopped and removed at the end. Or --database-url
of a running local server and a superuser (or a role that may CREATE DATABASE), left as
it is configured; its processes must be visible in /proc for the CPU figure. Linux only.

--pause-views stops each instance's projector process (SIGSTOP) for the steady phase
and resumes it after: the CPU figures are then those of ingest alone (the log's appends;
on PostgreSQL the server's share without the views' reads and writes), to tell how much
of a ratio the views make. Targets are not judged then (exit 1 only on a problem: a
non-200, an event missing or twice, the chain, an untrusted CPU figure). On SQLite a
stopped projector keeps its WAL read mark, so checkpoints cannot finish and the WAL grows
for those seconds: ingest alone is measured without the checkpoints it would pay.

    python scripts/bench_pg.py [--rounds 5] [--seconds 5] [--warmup 1] [--database-url URL]
                               [--pause-views]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import psycopg  # noqa: E402
from bench_ingest import signed_bodies  # noqa: E402
from bench_serve_shapes import tree_cpu  # noqa: E402
from benchlib import SECRETS, verdict, wait_for_views  # noqa: E402
from load import LoadResult, run_load, write_bodies  # noqa: E402
from psycopg import sql  # noqa: E402

from app.config import fingerprint  # noqa: E402
from app.signing import sign  # noqa: E402
from eventlog.verify import verify_log  # noqa: E402
from projections.storage import Storage  # noqa: E402
from tests.pg import PgServer, _start_cluster, _stop_cluster, url_for  # noqa: E402
from tests.server import Server, write_config  # noqa: E402

SQLITE, PG = "sqlite", "postgresql"
RATE_RATIO_TARGET = 0.8  # postgresql 2x32 / sqlite 1x64, accepted req/s
P99_TARGET_MS = 50.0  # postgresql 2x32, worst instance
CPU_RATIO_TARGET = 1.25  # postgresql 1x16 / sqlite 1x16, CPU per delivery
THROUGHPUT = ((SQLITE, 1, 64), (PG, 2, 32))  # (backend, instances, connections each)
CPU = ((SQLITE, 1, 16), (PG, 1, 16))


@dataclass
class Run:
    backend: str
    instances: int
    connections: int  # per instance
    rate: float  # accepted (answered 200) per second, all instances
    cpu_us: float  # CPU µs per answered request: serve trees + (PostgreSQL) the server's tree
    pg_cpu_us: float  # of which the PostgreSQL server's processes
    p50_ms: float  # worst instance's
    p99_ms: float  # worst instance's
    processes: int
    problems: list[str] = field(default_factory=list)  # correctness: answers, log, chain
    cpu_notes: list[str] = field(default_factory=list)  # the CPU figure is not to be trusted

    @property
    def label(self) -> str:
        return f"{self.backend} {self.instances}x{self.connections}"


# --- the PostgreSQL server -------------------------------------------------------------


def admin(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, connect_timeout=10)


def make_durable(server: PgServer) -> None:
    """The throwaway cluster runs fsync=off for the tests; a benchmark compares durable logs."""
    with admin(server.admin_url) as conn:
        for name in ("fsync", "full_page_writes", "synchronous_commit"):
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = on").format(sql.Identifier(name)))
        conn.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while settings(server.admin_url)["fsync"] != "on":  # the reload is asynchronous
        if time.monotonic() > deadline:
            raise SystemExit("the cluster did not take fsync = on")
        time.sleep(0.05)


def settings(url: str) -> dict[str, str]:
    names = ("server_version", "fsync", "synchronous_commit", "full_page_writes", "shared_buffers")
    with admin(url) as conn:
        return {name: str(conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0])  # type: ignore[index]
                for name in names}  # fmt: skip


def postmaster_pid(url: str) -> int | None:
    """The server's postmaster (the parent of our backend), if it runs on this machine."""
    if urlsplit(url).hostname not in (None, "", "localhost", "127.0.0.1", "::1"):
        return None
    with admin(url) as conn:
        backend = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
        try:
            stat = Path(f"/proc/{backend}/stat").read_text()
            comm = Path(f"/proc/{backend}/comm").read_text().strip()
        except OSError:
            return None
    parent = int(stat.rsplit(")", 1)[1].split()[1])
    if not comm.startswith("postgres"):
        return None
    return parent


@contextlib.contextmanager
def fresh_database(server: PgServer) -> Iterator[str]:
    """The URL of a new, empty database; dropped on leaving."""
    name = f"notestore_bench_{uuid.uuid4().hex[:12]}"
    with admin(server.admin_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield url_for(server.admin_url, dbname=name)
    finally:
        with admin(server.admin_url) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# --- one run ---------------------------------------------------------------------------


@contextlib.contextmanager
def instances(folder: Path, count: int, database_url: str | None) -> Iterator[list[Server]]:
    """`count` running serve instances, each with a data_dir of its own; stopped on exit."""
    more = {"database_url": database_url} if database_url else {}
    servers = []
    try:
        for i in range(count):
            home = folder / chr(ord("a") + i)
            home.mkdir()
            servers.append(Server(write_config(home, SECRETS, {"t": ["*"]}, **more)).start(60))
        for server in servers:
            wait_for_views(server.url, timeout=60)
        yield servers
    finally:
        for server in servers:
            server.stop()


def load_all(targets: list[tuple[str, Path]], seconds: float, connections: int) -> list[LoadResult]:
    """One wrk per target, all at once."""
    with ThreadPoolExecutor(len(targets)) as pool:
        runs = [pool.submit(run_load, f"{url}/webhooks/mobio", bodies, seconds, connections)
                for url, bodies in targets]  # fmt: skip
        return [r.result() for r in runs]


def answered(result: LoadResult) -> int:
    return result.requests - result.non_2xx


def logged_events(storage: Storage) -> tuple[int, int]:
    conn = storage.log_reader()
    try:
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT message_id) FROM events"
        ).fetchone()
    finally:
        conn.close()
    return int(rows), int(distinct)


def signer(app_id: str, stored_fingerprint: str, body: bytes) -> str | None:
    for secret in SECRETS.get(app_id, []):
        if fingerprint(secret) == stored_fingerprint:
            return sign(app_id, body, secret)
    return None


def verify(config: Path, storage: Storage, rows: int) -> str | None:
    """None if the log verifies (and holds `rows` events), else what is wrong."""
    out = subprocess.run([sys.executable, "-m", "app", "verify", "--config", str(config)],
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    text = (out.stdout + out.stderr).strip()
    if out.returncode == 0 and "OK: the log verifies" in out.stdout:
        checked = f"checked {rows} events"
        return None if checked in out.stdout else f"notestore verify: {text.splitlines()[0]}"
    if "FAILED: the log does not verify" in out.stdout:
        return "notestore verify: " + " | ".join(text.splitlines()[-4:])
    print(f"    notestore verify did not run ({out.returncode}: {text.splitlines()[-1:]}); "
          "verifying through eventlog.verify.verify_log", flush=True)  # fmt: skip
    conn = storage.log_reader()
    try:
        report = verify_log(conn, signer)
    finally:
        conn.close()
    if not report.ok:
        problems = report.events.problems + report.requests.problems
        return "verify_log: " + "; ".join(problems[:3] or ["expected head not seen"])
    if report.events.rows != rows:
        return f"verify_log walked {report.events.rows} events of {rows}"
    return None


def one_run(
    backend: str, count: int, connections: int, folder: Path, server: PgServer | None,
    files: dict[str, list[tuple[Path, int]]], args: argparse.Namespace,
) -> Run:  # fmt: skip
    problems: list[str] = []
    notes: list[str] = []
    warm_files, steady_files = files[f"warm{count}"], files[f"steady{count}"]
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(fresh_database(server)) if server is not None else None
        pg_root = postmaster_pid(url) if url is not None else None
        if url is not None and pg_root is None:
            notes.append("the PostgreSQL server's processes are not visible here")
        storage = Storage(folder / "a" / "data", url)
        with instances(folder, count, url) as servers:
            serve_roots = [s.proc.pid for s in servers if s.proc is not None]
            warm = load_all([(s.url, f) for s, (f, _) in zip(servers, warm_files, strict=True)],
                            args.warmup, connections)  # fmt: skip
            roots = serve_roots + ([pg_root] if pg_root is not None else [])
            paused = [pid for root in serve_roots for pid in tree_cpu(root) if pid != root] \
                if args.pause_views else []  # fmt: skip
            try:
                for pid in paused:
                    os.kill(pid, signal.SIGSTOP)
                before = [tree_cpu(root) for root in roots]
                steady = load_all(
                    [(s.url, f) for s, (f, _) in zip(servers, steady_files, strict=True)],
                    args.seconds, connections,
                )  # fmt: skip
                after = [tree_cpu(root) for root in roots]
            finally:  # a projector left stopped would hold serve's shutdown and its lease
                for pid in paused:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
        cpu = [
            sum(s - b.get(pid, 0.0) for pid, s in a.items())
            for b, a in zip(before, after, strict=True)
        ]
        gone = sum(len(set(b) - set(a)) for b, a in zip(before, after, strict=True))
        if gone:
            notes.append(f"{gone} process(es) ended during the steady phase: CPU undercounted")
        for phase, results, phase_files in (
            ("warm-up", warm, warm_files),
            ("steady", steady, steady_files),
        ):
            for i, (result, (_, bodies)) in enumerate(zip(results, phase_files, strict=True)):
                where = f"{phase}{f' instance {i + 1}' if count > 1 else ''}"
                if result.non_2xx or result.errors:
                    problems.append(
                        f"{where}: {result.non_2xx} non-200, {result.errors} socket errors"
                    )
                # wrk splits the bodies between its 2 threads, each cycling its half
                if result.requests > 0.9 * bodies:
                    problems.append(
                        f"{where}: ran out of distinct bodies ({result.requests:,} sent)"
                    )
        rows, distinct = logged_events(storage)
        sent = sum(answered(r) for r in warm + steady)
        # wrk stops mid-flight: up to `connections` per instance and phase commit unanswered
        slack = 2 * count * connections
        if rows != distinct or not sent <= distinct <= sent + slack:
            problems.append(f"log holds {rows:,} rows / {distinct:,} distinct message_ids "
                            f"for {sent:,} answered 200")  # fmt: skip
        if url is not None:
            wrong = verify(servers[0].config, storage, rows)
            if wrong:
                problems.append(wrong)
    ok = sum(answered(r) for r in steady)
    rate = sum(r.rate * answered(r) / max(r.requests, 1) for r in steady)
    pg_cpu = cpu[len(serve_roots)] if pg_root is not None else 0.0
    return Run(
        backend, count, connections, rate, sum(cpu) / max(ok, 1) * 1e6, pg_cpu / max(ok, 1) * 1e6,
        max(r.p50_ms for r in steady), max(r.p99_ms for r in steady),
        sum(len(a) for a in after), problems, notes,
    )  # fmt: skip


def show(run: Run, baseline: Run | None) -> None:
    pg = f" (PG {run.pg_cpu_us:4.0f})" if run.backend == PG else " " * 10
    ratio = ""
    if baseline is not None and run.backend == PG:
        ratio = (f"  {run.rate / baseline.rate:4.2f}x rate" if run.connections * run.instances == 64
                 else f"  {run.cpu_us / baseline.cpu_us:4.2f}x CPU")  # fmt: skip
    print(f"  {run.label:<16} {run.rate:8,.0f} req/s  {run.cpu_us:5.0f} µs CPU{pg}  "
          f"p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms  ({run.processes} processes){ratio}"
          + ("  PROBLEM: " + "; ".join(run.problems) if run.problems else "")
          + ("  CPU NOTE: " + "; ".join(run.cpu_notes) if run.cpu_notes else ""), flush=True)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5, help="steady phase of each run")
    parser.add_argument("--warmup", type=float, default=1, help="warm-up before each steady phase")
    parser.add_argument("--bodies", type=int, default=80_000,
                        help="distinct steady deliveries (halved between the two instances)")  # fmt: skip
    parser.add_argument("--warm-bodies", type=int, default=20_000)
    parser.add_argument("--database-url", help="a running local PostgreSQL (superuser URL) "
                        "instead of a throwaway cluster")  # fmt: skip
    parser.add_argument("--pause-views", action="store_true",
                        help="stop the projector processes during each steady phase")  # fmt: skip
    parser.add_argument("--no-fsync", action="store_true",
                        help="leave the throwaway cluster at the tests' fsync=off settings")  # fmt: skip
    args = parser.parse_args()
    # serve reads NOTESTORE_DATABASE_URL before its config: the SQLite runs must not see one
    os.environ.pop("NOTESTORE_DATABASE_URL", None)
    started_at = time.monotonic()
    server = PgServer(admin_url=args.database_url, started_here=False) if args.database_url \
        else _start_cluster()  # fmt: skip
    try:
        if server.started_here and not args.no_fsync:
            make_durable(server)
        shown = ", ".join(f"{k} {v}" for k, v in settings(server.admin_url).items())
        where = "throwaway cluster" if server.started_here else "given server"
        print(f"PostgreSQL ({where}): {shown}", flush=True)
        runs, rate_ratios, cpu_ratios = rounds(args, server)
    finally:
        _stop_cluster(server)
    return summarise(args, runs, rate_ratios, cpu_ratios, time.monotonic() - started_at)


def rounds(
    args: argparse.Namespace, server: PgServer
) -> tuple[dict[str, list[Run]], list[float], list[float]]:
    runs: dict[str, list[Run]] = {}
    rate_ratios: list[float] = []
    cpu_ratios: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        print(f"signing {args.warm_bodies + args.bodies:,} distinct deliveries ...", flush=True)
        bodies = signed_bodies(args.warm_bodies + args.bodies)
        warm, steady = bodies[: args.warm_bodies], bodies[args.warm_bodies :]
        del bodies
        files: dict[str, list[tuple[Path, int]]] = {}
        for phase, chunk in (("warm", warm), ("steady", steady)):
            half = len(chunk) // 2
            for key, parts in ((f"{phase}1", [chunk]), (f"{phase}2", [chunk[:half], chunk[half:]])):
                files[key] = []
                for i, part in enumerate(parts):
                    path = Path(tmp) / f"{key}-{i}.txt"
                    write_bodies(path, part)
                    files[key].append((path, len(part)))
        del warm, steady
        print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start; "
              f"{args.warmup:g} s warm-up + {args.seconds:g} s steady per run")  # fmt: skip
        for number in range(args.rounds):
            flip = number % 2 == 1
            print(
                f"round {number + 1} ({'postgresql first' if flip else 'sqlite first'})", flush=True
            )
            for pair, ratios in ((THROUGHPUT, rate_ratios), (CPU, cpu_ratios)):
                done: dict[str, Run] = {}
                for backend, count, connections in reversed(pair) if flip else pair:
                    folder = Path(tmp) / f"r{number}-{backend}-{count}x{connections}"
                    folder.mkdir()
                    done[backend] = one_run(backend, count, connections, folder,
                                            server if backend == PG else None, files, args)  # fmt: skip
                for backend in (SQLITE, PG):
                    show(done[backend], done[SQLITE])
                    runs.setdefault(done[backend].label, []).append(done[backend])
                sqlite, pg = done[SQLITE], done[PG]
                ratios.append(
                    pg.rate / sqlite.rate if pair is THROUGHPUT else pg.cpu_us / sqlite.cpu_us
                )
    return runs, rate_ratios, cpu_ratios


def summarise(
    args: argparse.Namespace, runs: dict[str, list[Run]], rate_ratios: list[float],
    cpu_ratios: list[float], took: float,
) -> int:  # fmt: skip
    med = statistics.median
    print(f"\nmedians of {args.rounds} rounds (took {took:.0f} s; load average now "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores)")  # fmt: skip
    print(f"{'run':<17}{'req/s':>9} {'CPU µs':>7} {'of it PG':>8} {'p50 ms':>7} {'p99 ms':>7}"
          f" {'worst p99':>9}  problems")  # fmt: skip
    for label, group in runs.items():
        flagged = sum(len(r.problems) + len(r.cpu_notes) for r in group)
        print(f"{label:<17}{med(r.rate for r in group):>9,.0f} {med(r.cpu_us for r in group):>7.0f}"
              f" {med(r.pg_cpu_us for r in group):>8.0f} {med(r.p50_ms for r in group):>7.2f}"
              f" {med(r.p99_ms for r in group):>7.2f} {max(r.p99_ms for r in group):>9.2f}  {flagged}")  # fmt: skip
    two = runs[f"{PG} 2x32"]
    rate_ratio, cpu_ratio = med(rate_ratios), med(cpu_ratios)
    p99 = med(r.p99_ms for r in two)
    problems = [f"round {i + 1}: {p}" for i, r in enumerate(two) for p in r.problems]
    others = [f"round {i + 1} {r.label}: {p}" for label, group in runs.items() if group is not two
              for i, r in enumerate(group) for p in r.problems]  # fmt: skip
    cpu_notes = [f"round {i + 1} {r.label}: {n}" for label in (f"{SQLITE} 1x16", f"{PG} 1x16")
                 for i, r in enumerate(runs[label]) for n in r.cpu_notes]  # fmt: skip
    checks = [
        (f"two instances: accepted rate {rate_ratio:.2f}x sqlite 1x64 (>= {RATE_RATIO_TARGET:g}x; "
         f"rounds {', '.join(f'{x:.2f}' for x in rate_ratios)})", rate_ratio >= RATE_RATIO_TARGET),
        (f"two instances: p99 {p99:.1f} ms, worst instance, median of rounds (<= {P99_TARGET_MS:g} ms)",
         p99 <= P99_TARGET_MS),
        ("two instances: every answer 200, every event once, the chain verifies" if not problems
         else f"two instances: {len(problems)} problem(s): " + "; ".join(problems), not problems),
        (f"one instance: CPU/delivery {cpu_ratio:.2f}x sqlite 1x16 (<= {CPU_RATIO_TARGET:g}x; "
         f"rounds {', '.join(f'{x:.2f}' for x in cpu_ratios)})"
         + (f"; UNTRUSTED: {'; '.join(cpu_notes)}" if cpu_notes else ""),
         cpu_ratio <= CPU_RATIO_TARGET and not cpu_notes),
    ]  # fmt: skip
    if args.pause_views:  # no target judged; what went wrong still fails the run
        print(f"\nviews paused in the steady phases: ingest alone; CPU/delivery {cpu_ratio:.2f}x"
              f" sqlite 1x16 (rounds {', '.join(f'{x:.2f}' for x in cpu_ratios)})")  # fmt: skip
        wrong = problems + others + [f"UNTRUSTED CPU: {n}" for n in cpu_notes]
        for line in wrong:
            print(f"  problem: {line}")
        return verdict(wrong)
    failures = []
    print("\ntargets (issue 13)")
    for text, ok in checks:
        print(f"  {'ok  ' if ok else 'MISS'} {text}")
        if not ok:
            failures.append(text)
    if others:  # no target of their own, but a baseline that misbehaved skews the ratios
        print(f"  note: {len(others)} problem(s) in the other runs: " + "; ".join(others))
    return verdict(failures)


if __name__ == "__main__":
    raise SystemExit(main())
