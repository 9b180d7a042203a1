#!/usr/bin/env python
"""WAL soak: under steady load the log's -wal file stays bounded, it is emptied once idle,
and no serve process keeps growing.

Starts `notestore serve` on a temporary data directory, sends distinct signed deliveries
(realistic, one block each) at --connections for --seconds, and meanwhile reads notes
and histories at --query-connections (readers are what keep a WAL from starting over).
Every --sample-every seconds it records the size of events.db, events.db-wal, views.db,
views.db-wal and each serve process's resident memory (from /proc). Then the load
stops, and the files are sampled again after --idle seconds without it.

Targets: events.db-wal below 256 MB at every sample under load and below 64 MB after
the idle wait; each process's memory flat after warm-up (the median of the last third
of the load within --rss-tolerance of the median of the second third); every delivery
answered 200. views.db-wal is held to the same two limits. Exits 1 when one is missed.

    python scripts/soak_wal.py [--seconds 600] [--connections 8] [--query-connections 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import SECRETS, signed, verdict  # noqa: E402
from load import LoadResult, run_load  # noqa: E402
from workload import Workload  # noqa: E402

from tests.server import Server, write_config  # noqa: E402

MB = 1024 * 1024
TOKEN = "soak"
CHUNK = 20_000  # bodies signed per task when preparing the load
FILES = ("events.db", "events.db-wal", "views.db", "views.db-wal")

QUERY_LUA = r"""
local ids, i = {%s}, 0
function request()
  i = i + 1
  local id = ids[(i %% #ids) + 1]
  local path = "/notes/" .. id
  if i %% 2 == 0 then path = path .. "/history" end
  return wrk.format("GET", path, {["Authorization"] = "Bearer %s"})
end
"""


@dataclass
class Sample:
    at: float  # seconds since the load started
    phase: str  # load or idle
    files: dict[str, int]
    rss: dict[str, int] = field(default_factory=dict)  # process label -> bytes


def _sign_chunk(seed: int) -> list[tuple[str, bytes]]:
    work = Workload(seed=seed)
    return [signed(work.body()) for _ in range(CHUNK)]


def prepare_bodies(path: Path, count: int) -> None:
    """`count` distinct signed deliveries, signed on every core."""
    started = time.monotonic()
    chunks = range(1000, 1000 + (count + CHUNK - 1) // CHUNK)
    written = 0
    with path.open("wb") as f, multiprocessing.Pool() as pool:
        for bodies in pool.imap(_sign_chunk, chunks):
            for sig, body in bodies[: count - written]:
                f.write(sig.encode() + b"\t" + body + b"\n")
            written = min(count, written + len(bodies))
    print(f"  signed {written:,} in {time.monotonic() - started:.0f} s")


def query_ids() -> list[str]:
    """Notes with a few dozen events each: the workload's few hottest notes get most of
    the events (their history would be a read of the whole log), the coldest none."""
    return Workload(seed=1000).notes[50:550]


def run_queries(url: str, folder: Path, seconds: float, connections: int) -> str:
    script = folder / "queries.lua"
    ids = ", ".join(json.dumps(i) for i in query_ids())
    script.write_text(QUERY_LUA % (ids, TOKEN))
    done = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
         "--timeout", "10s", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rate = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    p99 = re.search(r"^\s+99%\s+(\S+)$", done.stdout, re.M)
    return f"{float(rate.group(1)) if rate else 0:,.0f} req/s, p99 {p99.group(1) if p99 else '?'}"


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _name(pid: int) -> str:
    """A process serve did not name in its log (multiprocessing's helpers): by its command."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"pid{pid}"
    text = b" ".join(argv).decode(errors="replace")
    for hint in ("resource_tracker", "forkserver", "semaphore_tracker"):
        if hint in text:
            return hint
    return f"pid{pid}"


def serving_pids(log_path: Path) -> dict[int, str]:
    """pid -> role, from serve's `serving` line and its restarts."""
    roles: dict[int, str] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "serving":
            roles[entry["pid"]] = "serve"
            if entry.get("projectors_pid"):
                roles[entry["projectors_pid"]] = "projectors"
    return roles


class Sampler:
    def __init__(self, server: Server, data_dir: Path) -> None:
        self.server, self.data_dir = server, data_dir
        self.samples: list[Sample] = []
        self.started = time.monotonic()
        self.seen: dict[str, set[int]] = {}  # role -> pids seen: more than one is a restart

    def sample(self, phase: str) -> Sample:
        files = {}
        for name in FILES:
            try:
                files[name] = (self.data_dir / name).stat().st_size
            except FileNotFoundError:
                files[name] = 0
        assert self.server.proc is not None
        serve = self.server.proc.pid
        roles = {serve: "serve", **serving_pids(self.server.log_path)}
        rss = {}
        for pid in descendants(serve):
            size = rss_bytes(pid)
            if size is None:
                continue
            role = roles.get(pid) or _name(pid)
            rss[role] = size
            self.seen.setdefault(role, set()).add(pid)
        taken = Sample(time.monotonic() - self.started, phase, files, rss)
        self.samples.append(taken)
        return taken


def show(samples: list[Sample]) -> None:
    roles = sorted({r for s in samples for r in s.rss}, key=lambda r: (r != "serve", r))
    widths = [max(12, len(r) + 2) for r in roles]
    head = f"{'t (s)':>7} {'phase':<5}" + "".join(f"{n:>14}" for n in FILES)
    print(head + "".join(f"{r:>{w}}" for r, w in zip(roles, widths, strict=True)))
    units = "".join(f"{'MB':>14}" for _ in FILES) + "".join(f"{'RSS MB':>{w}}" for w in widths)
    print(" " * 13 + units)
    for s in samples:
        row = f"{s.at:7.0f} {s.phase:<5}" + "".join(f"{s.files[n] / MB:14.1f}" for n in FILES)
        rss = [f"{s.rss.get(r, 0) / MB:{w}.1f}" for r, w in zip(roles, widths, strict=True)]
        print(row + "".join(rss))


def checks(
    samples: list[Sample], args: argparse.Namespace, sampler: Sampler, load: LoadResult | None
) -> list[str]:
    failures = []
    during = [s for s in samples if s.phase == "load"]
    idle = [s for s in samples if s.phase == "idle"][-1]
    for db in ("events.db", "views.db"):
        wal = f"{db}-wal"
        peak = max(s.files[wal] for s in during)
        ok = peak < args.wal_limit_mb * MB
        print(f"{'PASS' if ok else 'FAIL'} max {wal} under load: {peak / MB:.1f} MB "
              f"(limit {args.wal_limit_mb} MB)")  # fmt: skip
        if not ok:
            failures.append(f"{wal} reached {peak / MB:.0f} MB under load")
        after = idle.files[wal]
        ok = after < args.idle_limit_mb * MB
        print(f"{'PASS' if ok else 'FAIL'} {wal} after {args.idle:g} s idle: {after / MB:.1f} MB "
              f"(limit {args.idle_limit_mb} MB)")  # fmt: skip
        if not ok:
            failures.append(f"{wal} {after / MB:.0f} MB after {args.idle:g} s idle")
    third = len(during) // 3
    for role in sorted({r for s in during for r in s.rss}):
        second = [s.rss[role] for s in during[third : 2 * third] if role in s.rss]
        last = [s.rss[role] for s in during[2 * third :] if role in s.rss]
        if not second or not last:
            continue
        grew = statistics.median(last) / statistics.median(second) - 1
        ok = grew <= args.rss_tolerance
        print(f"{'PASS' if ok else 'FAIL'} {role} RSS: median {statistics.median(second) / MB:.1f}"
              f" MB in the second third, {statistics.median(last) / MB:.1f} MB in the last"
              f" ({grew:+.1%}, limit +{args.rss_tolerance:.0%})")  # fmt: skip
        if not ok:
            failures.append(f"{role} RSS grew {grew:+.1%}")
    restarted = [role for role, pids in sampler.seen.items() if len(pids) > 1]
    if restarted:
        failures.append(f"restarted during the soak: {', '.join(restarted)}")
    if load is None:
        failures.append("the load generator failed")
    elif load.non_2xx or load.errors:
        failures.append(f"{load.non_2xx} answers not 200, {load.errors} socket errors")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600, help="how long the load runs")
    parser.add_argument("--connections", type=int, default=8, help="delivering connections")
    parser.add_argument("--query-connections", type=int, default=2,
                        help="connections reading notes and histories (0: none; needs wrk)")  # fmt: skip
    parser.add_argument("--sample-every", type=float, default=5.0)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds without load, then sample")
    parser.add_argument("--bodies", type=int, help="distinct deliveries (default: 2,600 a second)")
    parser.add_argument("--wal-limit-mb", type=float, default=256)
    parser.add_argument("--idle-limit-mb", type=float, default=64)
    parser.add_argument("--rss-tolerance", type=float, default=0.15)
    parser.add_argument("--keep", type=Path, help="keep the data directory here")
    args = parser.parse_args()
    count = args.bodies or int(args.seconds * 2600)

    tmp = Path(tempfile.mkdtemp(prefix="soak-wal-"))
    try:
        bodies = tmp / "bodies.txt"
        print(f"preparing {count:,} signed deliveries")
        prepare_bodies(bodies, count)
        folder = tmp / "serve"
        folder.mkdir()
        config = write_config(folder, SECRETS, {TOKEN: ["*"]})
        server = Server(config).start(timeout=60)
        try:
            sampler = Sampler(server, folder / "data")
            results: dict[str, object] = {}

            def deliver() -> None:
                try:
                    results["load"] = run_load(
                        f"{server.url}/webhooks/mobio", bodies, args.seconds, args.connections
                    )
                except Exception as exc:  # reported below, with the samples taken so far
                    results["load_error"] = exc

            def query() -> None:
                try:
                    results["queries"] = run_queries(
                        server.url, tmp, args.seconds, args.query_connections
                    )
                except Exception as exc:
                    results["queries"] = f"failed: {exc}"

            threads = [threading.Thread(target=deliver)]
            if args.query_connections and shutil.which("wrk"):
                threads.append(threading.Thread(target=query))
            print(f"load: {args.connections} delivering connections, "
                  f"{args.query_connections if len(threads) > 1 else 0} reading, "
                  f"{args.seconds:g} s")  # fmt: skip
            sampler.started = time.monotonic()
            for t in threads:
                t.start()
            shown = 0.0
            while any(t.is_alive() for t in threads):
                s = sampler.sample("load")
                if s.at >= shown:
                    shown += 30
                    print(f"  {s.at:5.0f} s  events.db-wal {s.files['events.db-wal'] / MB:7.1f} MB"
                          f"  views.db-wal {s.files['views.db-wal'] / MB:7.1f} MB", flush=True)  # fmt: skip
                for t in threads:
                    t.join(timeout=args.sample_every / len(threads))
            stopped = time.monotonic()
            time.sleep(max(0.0, stopped + args.idle - time.monotonic()))  # the idle wait itself
            sampler.sample("idle")
        finally:
            server.stop()
        log_text = server.log_path.read_text(errors="replace")

        load = results.get("load")
        load = load if isinstance(load, LoadResult) else None
        show(sampler.samples)
        if load is not None:
            print(f"deliveries: {load.requests:,} answered ({load.rate:,.0f} req/s), "
                  f"p50 {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms, "
                  f"{load.non_2xx} not 200, {load.errors} socket errors")  # fmt: skip
            if load.requests > count:
                print(f"  (only {count:,} distinct: the rest were redeliveries; raise --bodies)")
        else:
            print(f"deliveries: load generator failed: {results.get('load_error')}")
        if "queries" in results:
            print(f"queries: {results['queries']}")
        deferred = log_text.count("wal_reset_deferred")
        print(f"serve logged wal_reset_deferred {deferred} time(s)")
        return verdict(checks(sampler.samples, args, sampler, load))
    finally:
        if args.keep:
            shutil.copytree(tmp / "serve", args.keep, dirs_exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
