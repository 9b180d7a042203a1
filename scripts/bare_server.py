"""The baseline for bench_ingest: a bare aiohttp POST handler that only reads the body."""

from __future__ import annotations

import sys

from aiohttp import web


async def receive(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"accepted": 1, "duplicates": 0, "quarantined": 0})


app = web.Application(client_max_size=1_048_576)
app.router.add_post("/webhooks/mobio", receive)
app.router.add_get("/healthz", lambda r: web.json_response({"status": "ok"}))

if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
