#!/usr/bin/env python
"""Fuzz drill: thousands of malformed, truncated, oversized, deeply nested, wrongly typed and
wrongly encoded bodies, signed and unsigned, and hostile headers, at a real `notestore serve`.

No answer may be a 500, the server must stay up, unsigned input must reach no table, and
every signed body must be kept: its request stored, its blocks in the log or in quarantine.

    python scripts/fuzz_receiver.py [--count 3000] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sqlite3
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.signing import SIGNATURE_HEADER  # noqa: E402
from tests.helpers import APP_A, SAMPLE_FILES, SECRETS, make_block, make_body, signature  # noqa: E402
from tests.server import Server, write_config  # noqa: E402

MAX_BODY = 1_048_576


def mutate_json(rng: random.Random, value: Any, depth: int = 0) -> Any:
    """Replace, drop or retype parts of a valid body."""
    if isinstance(value, dict) and value:
        out = dict(value)
        key = rng.choice(list(out))
        choice = rng.random()
        if choice < 0.3:
            del out[key]
        elif choice < 0.8:
            out[key] = mutate_json(rng, out[key], depth + 1)
        else:
            out[key] = rng.choice(
                [None, True, 1e308, -1, "", "x" * 300, [], {}, [[[]]], "1669200439"]
            )
        return out
    if isinstance(value, list) and value:
        out_list = list(value)
        i = rng.randrange(len(out_list))
        out_list[i] = mutate_json(rng, out_list[i], depth + 1)
        if rng.random() < 0.2:
            out_list.append(rng.choice(out_list))
        return out_list
    return rng.choice([None, False, 0, 3.5, "", "ạ", [], {}, value])


def body_for(rng: random.Random) -> bytes:
    kind = rng.randrange(9)
    valid = make_body(make_block(), make_block("note_comment_update_data"))
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 2000))
    if kind == 1:
        raw = json.dumps(valid).encode()
        return raw[: rng.randrange(len(raw))]
    if kind == 2:
        depth = rng.choice([10, 65, 1000, 200_000])
        return b"[" * depth + b"]" * depth
    if kind == 3:
        return json.dumps(valid).encode(
            rng.choice(["utf-16", "utf-32", "latin-1"]).replace("latin-1", "utf-8")
        )
    if kind == 4:
        return json.dumps(valid, ensure_ascii=False).encode("utf-16")
    if kind == 5:
        return SAMPLE_FILES[rng.randrange(len(SAMPLE_FILES))].read_bytes()
    if kind == 6:
        return b"x" * (MAX_BODY + rng.randrange(1, 1000))
    return json.dumps(mutate_json(rng, mutate_json(rng, valid))).encode()


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    """Status and JSON answer (every answer of the receiver is JSON)."""
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read())


def raw_request(port: int, data: bytes) -> bytes:
    """Hostile HTTP at the socket level: bad lengths, huge or broken headers, garbage."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


HOSTILE = [
    b"POST /webhooks/mobio HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n{}",
    b"POST /webhooks/mobio HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}",
    b"POST /webhooks/mobio HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"POST /webhooks/mobio HTTP/1.1\r\nHost: x\r\n"
    + b"X-mevent-signature: "
    + b"a" * 20000
    + b"\r\n\r\n",
    b"POST /webhooks/mobio HTTP/1.1\r\nHost: x\r\nX-mevent-signature: \xff\xfe\r\nContent-Length: 2\r\n\r\n{}",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage-tls-hello",
    b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
]


def table_counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        return {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("requests", "events", "quarantine")
        }
    finally:
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    failures: list[str] = []
    statuses: dict[int, int] = {}
    signed_ok = 0
    with tempfile.TemporaryDirectory() as folder:
        config = write_config(Path(folder), SECRETS)
        with Server(config) as server:
            url = f"{server.url}/webhooks/mobio"
            for i in range(args.count):
                body = body_for(rng)
                sign = rng.random() < 0.6
                app_id = rng.choice([APP_A, APP_A, "unknown"])
                secret = "wrong" if app_id == "unknown" or rng.random() < 0.1 else None
                headers = {SIGNATURE_HEADER: signature(body, app_id, secret)} if sign else {}
                if not sign and rng.random() < 0.5:
                    headers = {SIGNATURE_HEADER: rng.choice(["", "0" * 64, "not-hex", "A" * 64])}
                status, answer = post(url, body, headers)
                statuses[status] = statuses.get(status, 0) + 1
                if status >= 500:
                    failures.append(f"input {i} answered {status}: {answer}")
                if status == 200:
                    signed_ok += 1
                    if sum(answer.values()) < 1:
                        failures.append(
                            f"input {i}: a signed body was neither logged nor quarantined"
                        )
                elif set(answer) != {"error"}:
                    failures.append(f"input {i}: refusal without an error message: {answer}")
            for data in HOSTILE:
                answer = raw_request(server.port, data)
                if b" 500 " in answer.split(b"\r\n", 1)[0]:
                    failures.append(f"hostile request answered 500: {data[:40]!r}")
            with urllib.request.urlopen(f"{server.url}/healthz", timeout=5) as resp:
                if resp.status != 200:
                    failures.append("the server is not healthy after the fuzzing")
        counts = table_counts(Path(folder) / "data" / "events.db")
    # every 200 stored exactly one request row; nothing else did
    if counts["requests"] != signed_ok:
        failures.append(
            f"{counts['requests']} request rows for {signed_ok} signed, accepted bodies"
        )
    print(
        f"{args.count} bodies + {len(HOSTILE)} hostile requests; answers: {dict(sorted(statuses.items()))}"
    )
    print(f"stored: {counts}")
    print("FUZZ DRILL PASSED" if not failures else "FUZZ DRILL FAILED: " + "; ".join(failures[:10]))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
