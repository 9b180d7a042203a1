"""The `notestore` command line (also `python -m app`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from app.config import DEFAULT_CONFIG, Settings, load_settings
from app.errors import NotestoreError

Command = Callable[[argparse.Namespace], int]
Arguments = Callable[[argparse.ArgumentParser], None]
COMMANDS: dict[str, tuple[Command, str, Arguments | None]] = {}


def command(
    name: str, help: str, arguments: Arguments | None = None
) -> Callable[[Command], Command]:
    """Register a subcommand; `arguments` adds its own to its parser."""

    def register(fn: Command) -> Command:
        COMMANDS[name] = (fn, help, arguments)
        return fn

    return register


def settings_of(args: argparse.Namespace, **flags: object) -> Settings:
    return load_settings(args.config, **flags)


def _parser() -> argparse.ArgumentParser:
    from app import commands  # noqa: F401  (registers the subcommands)

    parser = argparse.ArgumentParser(
        prog="notestore", description="Mobio note webhooks into an append-only log and views."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (fn, help_text, configure) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--config",
            metavar="FILE",
            help=f"TOML config (default: $NOTESTORE_CONFIG, else ./{DEFAULT_CONFIG} if present)",
        )
        if configure:
            configure(p)
        p.set_defaults(run=fn)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except NotestoreError as exc:
        print(f"notestore {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
