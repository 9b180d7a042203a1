#!/usr/bin/env python
"""Benchmark (issue 16): answer latency of a real `notestore serve` while `notestore erase`
redacts a note of many events, against a baseline of the same load without an erasure.

The scenario of tests/test_erase_load.py, measured: per backend, a log holding `--rounds`
notes of `--events` events each (the notes to erase, one per round) is folded by serve;
a sender posts signed deliveries of new notes (of the erased notes' merchant and of another
one) at `--rate` a second throughout, open loop (each sent when due, up to 16 in flight:
a slow answer delays no other delivery, and each latency counts from when it was due). Each round is a baseline window of
`--baseline` seconds without an erasure, then `notestore erase --note ... --yes` as a
subprocess; the load keeps going until it exits. The machine is shared and noisy, so the
baselines run alongside the erasures (interleaved) and the ratio is printed.

Printed per backend (p50 / p99 / max of the answers' latency, all rounds together):
- baseline: the load without an erasure;
- erase, whole: sent while the erase process ran (startup, counting, redacting, the views
  following, the scrub);
- and its phases, from the log's own times and erase's output: before the erasure was
  recorded (startup and counting), redacting (between the erasure and its end: the
  chunks), the views following (until erase says so), the scrub (until it exits: on SQLite
  the search index merged, VACUUM of views.db, TRUNCATE checkpoints; on PostgreSQL VACUUM
  and REINDEX CONCURRENTLY).
Then checks that every delivery was answered 200 and is in the log once, and the target:
p99 under 100 ms while the erase ran. Exit 1 when a check or the target fails.

    python scripts/erase_under_load.py [--backend sqlite|postgresql|both] [--events 20000]
        [--rounds 3] [--rate 40] [--baseline 3] [--database-url URL]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import (  # noqa: E402
    POSTGRESQL,
    add_backend_arguments,
    backends,
    postgresql_server,
    scratch_database,
)

from tests.helpers import SECRETS, wait_until  # noqa: E402
from tests.ops_kit import Backend  # noqa: E402
from tests.server import Server, write_config  # noqa: E402
from tests.test_erase_load import (  # noqa: E402
    TOKEN,
    Answer,
    Sender,
    erase_command,
    erasure_windows,
    logged_ids,
    percentile,
    seed,
)
from tests.test_two_instances import settled  # noqa: E402

TARGET_P99_MS = 100.0


def note_of(round_: int) -> str:
    return f"6510ee0000000000000e{round_ + 1:04x}"


@contextmanager
def backend_at(name: str, admin_url: str | None) -> Iterator[tuple[Backend, Path]]:
    with tempfile.TemporaryDirectory(prefix="erase-under-load-") as scratch:
        folder = Path(scratch)
        if name != POSTGRESQL:
            yield Backend(folder / "data"), folder
            return
        assert admin_url is not None
        with scratch_database(admin_url) as url:
            yield Backend(folder / "data", url), folder


def stats(latencies: list[float]) -> tuple[int, float, float, float]:
    ms = [x * 1000 for x in latencies]
    if not ms:
        return 0, float("nan"), float("nan"), float("nan")
    return len(ms), percentile(ms, 0.5), percentile(ms, 0.99), max(ms)


def line(name: str, latencies: list[float]) -> str:
    n, p50, p99, top = stats(latencies)
    return f"  {name:<34} {n:>5} {p50:>8.1f} {p99:>8.1f} {top:>8.1f}"


def run(name: str, admin_url: str | None, args: argparse.Namespace) -> list[str]:
    """One backend: the rounds, the figures printed; the failures."""
    failures: list[str] = []
    with backend_at(name, admin_url) as (backend, folder):
        started = time.perf_counter()
        for r in range(args.rounds):
            seed(backend, args.events, note_of(r))
        print(
            f"[{name}] seeded {args.rounds} notes of {args.events} events"
            f" in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        more = {"database_url": backend.url} if backend.url else {}
        config = write_config(folder, SECRETS, {TOKEN: ["*"]}, **more)
        storage = backend.storage
        baseline: list[tuple[float, float]] = []  # windows (wall clock)
        erasing: list[tuple[float, float]] = []
        scrubbing: list[tuple[float, float]] = []  # from "views followed" to its exit
        loads: list[float] = []
        with Server(config) as server:
            wait_until(lambda: settled(storage), 600, "serve's views folded the seeded log")
            sender = Sender(server.url, rate=args.rate, prefix=f"{name}-load").start()
            try:
                for r in range(args.rounds):
                    loads.append(os.getloadavg()[0])
                    start = time.time()
                    time.sleep(args.baseline)  # the baseline: load only, for this long
                    baseline.append((start, time.time()))
                    start = time.time()
                    code, output, followed = run_erase(erase_command(config, note_of(r)))
                    erasing.append((start, time.time()))
                    scrubbing.append((followed, time.time()))
                    if code != 0:
                        failures.append(f"{name}: erase exited {code}")
                        print(output, file=sys.stderr)
                    loads.append(os.getloadavg()[0])
                time.sleep(1.0)
            finally:
                answers = sender.stop()
            wait_until(lambda: settled(storage), 600, "the views folded every delivery")
        redactions = sorted(erasure_windows(storage).values())
        failures += check(name, answers, logged_ids(storage))
    print_figures(name, answers, baseline, erasing, redactions, scrubbing, loads, args)
    _, _, p99, _ = stats(within(answers, erasing))
    if not p99 < TARGET_P99_MS:
        failures.append(f"{name}: p99 {p99:.1f} ms while erasing (target {TARGET_P99_MS:.0f})")
    return failures


def run_erase(command: list[str]) -> tuple[int, str, float]:
    """Run `notestore erase`: (exit status, its output, when it said the views had followed,
    i.e. when its scrub began)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert proc.stdout is not None
    lines, followed = [], float("nan")
    for text in proc.stdout:
        if text.startswith("views followed") and followed != followed:
            followed = time.time()
        lines.append(text)
    return proc.wait(), "".join(lines), followed


def within(answers: list[Answer], windows: list[tuple[float, float]]) -> list[float]:
    """The latencies (from when each was due) of the deliveries sent within the windows."""
    return [a.from_due for a in answers if any(start <= a.sent <= end for start, end in windows)]


def check(name: str, answers: list[Answer], logged: dict[str, int]) -> list[str]:
    failures = []
    refused = [a for a in answers if a.status != 200]
    if refused:
        failures.append(f"{name}: {len(refused)} deliveries not answered 200")
    missing = [a for a in answers if logged.get(a.message_id) != 1]
    if missing:
        failures.append(f"{name}: {len(missing)} deliveries not in the log exactly once")
    return failures


def print_figures(
    name: str,
    answers: list[Answer],
    baseline: list[tuple[float, float]],
    erasing: list[tuple[float, float]],
    redactions: list[tuple[float, float]],
    scrubbing: list[tuple[float, float]],
    loads: list[float],
    args: argparse.Namespace,
) -> None:
    before = [(start, at) for (start, _), (at, _) in zip(erasing, redactions, strict=True)]
    views = [(end, at) for (_, end), (at, _) in zip(redactions, scrubbing, strict=True)]
    took = [stop - start for start, stop in erasing]
    redacting = [end - at for at, end in redactions]
    print(
        f"[{name}] {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average"
        f" {min(loads):.2f}-{max(loads):.2f} (1 min), {os.cpu_count()} cores;"
        f" {args.rounds} erasures of {args.events} events (+ as many requests), sender"
        f" {args.rate:.0f}/s; erase took {', '.join(f'{t:.1f}' for t in took)} s, redacting"
        f" {', '.join(f'{t:.2f}' for t in redacting)} s"
    )
    print(f"  {'latency (ms)':<34} {'n':>5} {'p50':>8} {'p99':>8} {'max':>8}")
    print(line("baseline (no erasure)", within(answers, baseline)))
    print(line("erase, whole", within(answers, erasing)))
    print(line("  starting, counting", within(answers, before)))
    print(line("  redacting (chunks)", within(answers, redactions)))
    print(line("  views following", within(answers, views)))
    print(line("  scrub", within(answers, scrubbing)))
    _, _, base, _ = stats(within(answers, baseline))
    _, _, during, _ = stats(within(answers, erasing))
    print(f"  p99 ratio erase / baseline: {during / base:.1f}x", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_backend_arguments(parser)
    parser.add_argument("--events", type=int, default=20_000, help="events of each erased note")
    parser.add_argument("--rounds", type=int, default=3, help="erasures (and baselines)")
    parser.add_argument("--rate", type=float, default=40.0, help="deliveries a second")
    parser.add_argument("--baseline", type=float, default=3.0, help="seconds of each baseline")
    args = parser.parse_args()
    wanted = backends(args)
    failures: list[str] = []
    with postgresql_server(args.database_url, wanted) as admin_url:
        for name in wanted:
            failures += run(name, admin_url, args)
    print("PASS" if not failures else "FAIL: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
