"""init, serve, send: getting deliveries in."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import structlog

from app.cli import command, settings_of
from app.config import DEFAULT_CONFIG, shown_url
from app.errors import NotestoreError
from app.lock import hold_serve_lock
from app.logs import configure_logging
from app.send import send_file
from app.serve import run
from app.starter import write_starter


def _init_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--exist-ok", action="store_true", help="leave an existing config alone instead of failing"
    )


@command("init", "write a starter notestore.toml with secrets and a token", _init_arguments)
def init(args: argparse.Namespace) -> int:
    path = Path(args.config or DEFAULT_CONFIG)
    if args.exist_ok and path.exists():
        print(f"{path} exists; keeping it")
        return 0
    made = write_starter(path)
    print(f"wrote {path}")
    for key, value in made.items():
        label = "query token" if key == "token" else f"app {key} secret"
        print(f"  {label}: {value}")
    print(
        "replace the sample app ids with your own Mobio app ids, secrets and merchant ids,"
        " then: notestore serve"
    )
    return 0


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="listen address (overrides the config)")
    p.add_argument("--port", type=int, help="listen port (overrides the config)")


@command("serve", "run the receiver, views and query API", _serve_arguments)
def serve(args: argparse.Namespace) -> int:
    settings = settings_of(args, host=args.host, port=args.port)
    configure_logging()
    log = structlog.get_logger("notestore")
    if not settings.apps:
        log.warning("no_apps_configured", hint="every delivery will be refused; see notestore init")
    for app_id, entry in sorted(settings.apps.items()):
        if entry.merchants is None:
            log.warning(
                "app_not_bound_to_merchants",
                app_id=app_id,
                hint=f'its secret can speak for any merchant: bind it with [apps."{app_id}"]'
                " secrets = [...] merchants = [...]",
            )
    if not settings.tokens:
        log.warning(
            "no_query_tokens_configured",
            hint="query routes answer 403; add one under [tokens] (notestore init generates one)",
        )
    if hold_serve_lock(settings.data_dir) is None:
        raise NotestoreError(f"another notestore serve is running on {settings.data_dir}")
    log.info(
        "starting", host=settings.host, port=settings.port, data_dir=str(settings.data_dir),
        backend=settings.storage.backend, database=shown_url(settings.database_url or "") or None,
    )  # fmt: skip
    return run(settings)


def _send_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--url", help="receiver URL (default: the configured host and port)")
    p.add_argument("--app-id", help="sign as this app (default: the body's app_id)")
    p.add_argument("--secret", help="sign with this secret (default: the app's configured one)")


@command("send", "sign payload files as Mobio would and post them to a notestore", _send_arguments)
def send(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    url = args.url or f"http://{settings.host}:{settings.port}/webhooks/mobio"
    failures = 0
    for path in args.files:
        status, answer = send_file(settings, path, url, args.app_id, args.secret)
        with contextlib.suppress(ValueError):
            answer = json.dumps(json.loads(answer), ensure_ascii=False)
        print(f"{path}: {status} {answer}")
        failures += status != 200
    if failures:
        print(f"{failures} of {len(args.files)} not accepted", file=sys.stderr)
    return 1 if failures else 0
