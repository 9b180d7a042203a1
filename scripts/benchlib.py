"""Shared by the benchmarks: building a realistic log fast, and timing helpers."""

from __future__ import annotations

import json
import statistics
import sys
import time
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
