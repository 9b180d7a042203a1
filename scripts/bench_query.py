#!/usr/bin/env python
"""Query benchmark: p99 of note, history, comments and a mention-feed page, in process and over
HTTP, on a large log against the same on a small one (indexes, never scans).

Targets, on SQLite and on PostgreSQL alike: p99(large) <= 1.5 x p99(small) for every query,
in process and over HTTP; over HTTP every p99 <= 10 ms; serve answers /healthz within 2 s of
starting on the large log. Search (issue 15): a tenth of each log's events are
scripts/search_corpus.py's live notes (the workload's notes are few and hot), the rest the
workload's; a selective word (`search`: the number of one note) answers in <= 50 ms p99 over
HTTP and within 1.5 x of the small log; a word of a few hundred notes on the large log
(`search_few`, a handful on the small one) in <= 50 ms p99 over HTTP (its ratio is shown,
not held: it matches a hundred times more notes); a common word (`search_common`, in every
corpus note) answers its first page in <= 200 ms p99 over HTTP. Small and large are measured in alternating rounds on one backend,
then the same on the other; each backend's table prints under its name.

    python scripts/bench_query.py [--small 10000] [--large 1000000] [--samples 400] [--rounds 5]
                                  [--backend sqlite|postgresql|both] [--database-url URL]

PostgreSQL: each log is a database of its own (dropped at the end) on a throwaway cluster
started as tests/pg.py starts one, or on --database-url's server (a role that may CREATE
DATABASE); it is built through PostgresLogStore.append in batches of 5000 and the time that
took is printed. Building is bound by making the deliveries (signing, intake: ~0.2 ms of CPU
each), about as fast as on SQLite: a 1M-event log takes minutes on either, so the full run
on both backends spends most of its time building two 1M-event logs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    POSTGRESQL,
    SECRETS,
    add_backend_arguments,
    backends,
    build_log,
    build_pg_log,
    median,
    p99,
    postgresql_server,
    scratch_database,
    verdict,
    wait_for_views,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from search_corpus import COMMON_WORD, FEW_WORD, FIRST_NUMBER, add_search_corpus  # noqa: E402

from app.queries import history, mentions, notes, search  # noqa: E402
from app.queries.scope import EVERYTHING  # noqa: E402
from eventlog.dbapi import Connection  # noqa: E402
from projections.rebuild import rebuild_all  # noqa: E402
from projections.registry import all_projectors  # noqa: E402
from projections.storage import Storage  # noqa: E402
from tests.server import Server, write_config  # noqa: E402

RATIO_TARGET, HTTP_P99_MS = 1.5, 10.0
QUERIES = ("note", "history", "comments", "mentions", "search", "search_few", "search_common")
HTTP_TARGETS_MS = {"search": 50.0, "search_few": 50.0, "search_common": 200.0}  # else HTTP_P99_MS
NO_RATIO = {"search_few", "search_common"}
SEARCH_SHARE = 10  # one event in ten of each log is a note of the search corpus
TOKEN = {"Authorization": "Bearer bench"}
WARM_UP = 20  # calls per query on each new connection, not timed


def event_count(storage: Storage) -> str:
    """SQL for a notes row's doc.event_count, on the storage's backend."""
    if storage.backend == POSTGRESQL:
        return "(doc::json ->> 'event_count')::bigint"
    return "json_extract(doc, '$.event_count')"


def subjects(views: Connection, count: str) -> dict[str, str]:
    """A note with about 50 events, a note with comments, a mentioned account."""
    note = views.execute(
        f"SELECT note_id FROM notes ORDER BY abs({count} - 50), note_id LIMIT 1"
    ).fetchone()[0]
    threaded = views.execute(
        "SELECT note_id FROM comments WHERE note_id IS NOT NULL GROUP BY note_id ORDER BY count(*) DESC, note_id LIMIT 1"
    ).fetchone()[0]
    account = views.execute(
        "SELECT account_id FROM mentions GROUP BY account_id ORDER BY count(*) DESC, account_id LIMIT 1"
    ).fetchone()[0]
    return {"note": note, "threaded": threaded, "account": account, "word": str(FIRST_NUMBER)}


def in_process(storage: Storage, s: dict[str, str], samples: int) -> dict[str, float]:
    views, log = storage.views(), storage.log_reader()
    calls = {
        "note": lambda: notes.get_note(views, EVERYTHING, s["note"]),
        "history": lambda: history.note_history(views, log, EVERYTHING, s["note"]),
        "comments": lambda: notes.comment_thread(views, EVERYTHING, s["threaded"], False),
        "mentions": lambda: mentions.mention_feed(views, EVERYTHING, s["account"], 50, None),
        "search": lambda: search.search_notes(views, EVERYTHING, [s["word"]], 20, (None, 0)),
        "search_few": lambda: search.search_notes(views, EVERYTHING, [FEW_WORD], 20, (None, 0)),
        "search_common": lambda: search.search_notes(
            views, EVERYTHING, [COMMON_WORD], 20, (None, 0)
        ),
    }
    out = {}
    for name, call in calls.items():
        for _ in range(WARM_UP):  # a new connection's first reads fill SQLite's page cache
            call()
        times = []
        for _ in range(samples):
            t = time.perf_counter()
            call()
            times.append((time.perf_counter() - t) * 1000)
        out[name] = p99(times)
    views.close()
    log.close()
    return out


async def over_http(url: str, s: dict[str, str], samples: int) -> dict[str, float]:
    paths = {
        "note": f"/notes/{s['note']}",
        "history": f"/notes/{s['note']}/history",
        "comments": f"/notes/{s['threaded']}/comments",
        "mentions": f"/accounts/{s['account']}/mentions",
        "search": f"/search?q={s['word']}",
        "search_few": f"/search?q={FEW_WORD}",
        "search_common": f"/search?q={COMMON_WORD}",
    }
    out = {}
    async with aiohttp.ClientSession(headers=TOKEN) as session:
        for name, path in paths.items():
            times = []
            for _ in range(samples):
                t = time.perf_counter()
                async with session.get(url + path) as resp:
                    await resp.read()
                    assert resp.status == 200, (path, resp.status)
                times.append((time.perf_counter() - t) * 1000)
            out[name] = p99(times)
    return out


def prepare(
    folder: Path, events: int, database_url: str | None = None
) -> tuple[Path, Storage, dict[str, str]]:
    """A config and a log of `events` (on PostgreSQL when database_url), its views built."""
    more = {"database_url": database_url} if database_url else {}
    config = write_config(folder, SECRETS, {"bench": ["*"]}, **more)
    storage = Storage(folder / "data", database_url)
    corpus = events // SEARCH_SHARE
    if database_url:
        took = build_pg_log(database_url, events - corpus)
        print(f"  {events:,} events: PostgreSQL log built in {took:.1f} s")
    else:
        build_log(storage.data_dir, events - corpus)
    add_search_corpus(storage, corpus)
    views, log = storage.views(), storage.log_reader()
    rebuild_all(all_projectors(), views, log)
    count = event_count(storage)
    s = subjects(views, count)
    found = views.execute(f"SELECT {count} FROM notes WHERE note_id = ?", (s["note"],)).fetchone()
    told = len(history.note_history(views, log, EVERYTHING, s["note"])["events"])
    print(
        f"  {events:,} events: history subject {s['note']} has {found[0]} note events,"
        f" {told} in its history (comments included)"
    )
    matched = {
        w: views.execute(
            "SELECT count(*) FROM search_docs WHERE ' ' || words || ' ' LIKE ?", (f"% {w} %",)
        ).fetchone()[0]
        for w in (s["word"], FEW_WORD, COMMON_WORD)
    }
    print(
        f"  {events:,} events: {matched[s['word']]} notes hold the selective word {s['word']!r},"
        f" {matched[FEW_WORD]} {FEW_WORD!r}, {matched[COMMON_WORD]} the common word"
        f" {COMMON_WORD!r}"
        f" (of {views.execute('SELECT count(*) FROM search_docs').fetchone()[0]} searchable)"
    )
    views.close()
    log.close()
    return config, storage, s


def measure(name: str, args: argparse.Namespace, admin_url: str | None) -> list[str]:
    """Small against large, in alternating rounds, on one backend; what missed a target."""
    failures = []
    with ExitStack() as stack:
        urls: dict[str, str | None] = {"small": None, "large": None}
        if name == POSTGRESQL:
            assert admin_url is not None
            urls = {side: stack.enter_context(scratch_database(admin_url)) for side in urls}
        sides = {
            side: prepare(
                Path(stack.enter_context(tempfile.TemporaryDirectory())), size, urls[side]
            )
            for side, size in (("small", args.small), ("large", args.large))
        }
        # As serve's processes do, keep start-up objects out of the collector's sight: the
        # in-process figures had been full collections of this script's own modules (25-80
        # ms every ~130 history calls), whatever the log's size. (Not serve's larger young
        # threshold: here the HTTP client shares the process, and its pauses would be timed.)
        gc.freeze()
        servers = {}
        for side, (config, _, _) in sides.items():
            started = time.perf_counter()
            servers[side] = Server(config).start()  # returns once /healthz answers
            took = time.perf_counter() - started
            print(
                f"  serve answered /healthz {took:.2f} s after starting on the {side} log (target <= 2 s)"
            )
            if side == "large" and took > 2.0:
                failures.append(f"{name}: start-up took {took:.1f} s")
        try:
            for server in servers.values():
                wait_for_views(server.url)
            p99s: dict[tuple[str, str, str], list[float]] = {}
            for _ in range(args.rounds):  # alternate, so drift on a shared machine hits both sides
                for side, (_, storage, s) in sides.items():
                    for query, value in in_process(storage, s, args.samples).items():
                        p99s.setdefault((side, "in process", query), []).append(value)
                    for query, value in asyncio.run(
                        over_http(servers[side].url, s, args.samples)
                    ).items():
                        p99s.setdefault((side, "over HTTP", query), []).append(value)
        finally:
            for server in servers.values():
                server.stop()
    print(
        f"[{name}] {'query':<13} {'where':<11} {'p99 small':>10} {'p99 large':>10} {'ratio':>7}   (medians of {args.rounds} rounds)"
    )
    for where in ("in process", "over HTTP"):
        for query in QUERIES:
            lo, hi = median(p99s[("small", where, query)]), median(p99s[("large", where, query)])
            print(f"[{name}] {query:<13} {where:<11} {lo:>8.3f}ms {hi:>8.3f}ms {hi / lo:>7.2f}")
            # sub-0.2 ms timings are dominated by noise: compare against a 0.2 ms floor
            if query not in NO_RATIO and hi > RATIO_TARGET * max(lo, 0.2):
                failures.append(f"{name}: {query} {where}: {hi / lo:.2f}x")
            target = HTTP_TARGETS_MS.get(query, HTTP_P99_MS)
            if where == "over HTTP" and hi > target:
                failures.append(f"{name}: {query} over HTTP p99 {hi:.1f} ms (target {target:.0f})")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=400, help="per query, per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating small/large rounds")
    add_backend_arguments(parser)
    args = parser.parse_args()
    wanted = backends(args)
    failures: list[str] = []
    with postgresql_server(args.database_url, wanted) as admin_url:
        for name in wanted:
            failures += measure(name, args, admin_url)
    return verdict(failures)


if __name__ == "__main__":
    raise SystemExit(main())
