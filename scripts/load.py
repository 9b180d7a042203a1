"""Driving load for the benchmarks: wrk with a Lua script that sends pre-signed distinct bodies.

Falls back to an aiohttp load generator in a separate process when wrk is not installed
(Debian: `apt-get install wrk`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

LUA = r"""
local bodies, sigs, n, i = {}, {}, 0, 0
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
function init(args)
  local file, threads = args[1], tonumber(args[2])
  local k = 0
  for line in io.lines(file) do
    if k % threads == id then
      local tab = line:find("\t")
      n = n + 1
      sigs[n] = line:sub(1, tab - 1)
      bodies[n] = line:sub(tab + 1)
    end
    k = k + 1
  end
end
function request()
  i = i + 1
  if i > n then i = 1 end
  return wrk.format("POST", "/webhooks/mobio", {["X-mevent-signature"] = sigs[i]}, bodies[i])
end
"""


@dataclass
class LoadResult:
    requests: int
    rate: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int


def write_bodies(path: Path, signed: list[tuple[str, bytes]]) -> None:
    with path.open("wb") as f:
        for sig, body in signed:
            assert b"\n" not in body and b"\t" not in body
            f.write(sig.encode() + b"\t" + body + b"\n")


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(
    url: str, bodies: Path, seconds: float, connections: int, threads: int = 2
) -> LoadResult:
    script = bodies.with_suffix(".lua")
    script.write_text(LUA)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s",
         "-s", str(script), url, "--", str(bodies), str(threads)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return LoadResult(
        requests, rate, _ms(latency["50"]), _ms(latency["99"]),
        int(non_2xx.group(1)) if non_2xx else 0,
        sum(int(g) for g in errors.groups()) if errors else 0,
    )  # fmt: skip


FALLBACK = r"""
import asyncio, json, sys, time
import aiohttp

async def main(url, path, seconds, connections):
    lines = open(path, "rb").read().splitlines()
    latencies, bad, count = [], 0, 0
    deadline = time.monotonic() + seconds
    async def worker(k):
        nonlocal bad, count
        async with aiohttp.ClientSession() as s:
            i = k
            while time.monotonic() < deadline:
                sig, body = lines[i % len(lines)].split(b"\t", 1)
                i += connections
                t = time.perf_counter()
                async with s.post(url, data=body, headers={"X-mevent-signature": sig.decode()}) as r:
                    await r.read()
                    bad += r.status != 200
                latencies.append(time.perf_counter() - t)
                count += 1
    started = time.monotonic()
    await asyncio.gather(*(worker(k) for k in range(connections)))
    took = time.monotonic() - started
    latencies.sort()
    print(json.dumps({"requests": count, "rate": count / took, "p50_ms": latencies[len(latencies) // 2] * 1000,
                      "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000, "non_2xx": bad, "errors": 0}))

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
"""


def run_load(url: str, bodies: Path, seconds: float, connections: int) -> LoadResult:
    if shutil.which("wrk"):
        return run_wrk(url, bodies, seconds, connections)
    out = subprocess.run([sys.executable, "-c", FALLBACK, url, str(bodies), str(seconds), str(connections)],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return LoadResult(**json.loads(out))


def wait_http(url: str, timeout: float = 20) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")
