"""The `notestore` command line (also `python -m app`)."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sqlite3
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg

from app.config import DEFAULT_CONFIG, Settings, load_settings, shown_url, without_password
from app.errors import NotestoreError

Command = Callable[[argparse.Namespace], int]
Arguments = Callable[[argparse.ArgumentParser], None]
COMMANDS: dict[str, tuple[Command, str, Arguments | None]] = {}

# SQLite's primary result codes that say the database file or its folder cannot be used
# (SQLITE_PERM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB), as opposed to a fault
# in a statement, which keeps its traceback.
_FILE_PROBLEMS = {3, 8, 10, 11, 13, 14, 26}


def command(
    name: str, help: str, arguments: Arguments | None = None
) -> Callable[[Command], Command]:
    """Register a subcommand; `arguments` adds its own to its parser."""

    def register(fn: Command) -> Command:
        COMMANDS[name] = (fn, help, arguments)
        return fn

    return register


def settings_of(args: argparse.Namespace, **flags: object) -> Settings:
    settings = load_settings(args.config, **flags)
    args.settings = settings  # for main(), to say where a data directory problem comes from
    args.flags = {k: v for k, v in flags.items() if v is not None}
    return settings


def version() -> str:
    try:
        return importlib.metadata.version("notestore")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree never installed
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    from app import commands  # noqa: F401  (registers the subcommands)

    parser = argparse.ArgumentParser(
        prog="notestore", description="Mobio note webhooks into an append-only log and views."
    )
    parser.add_argument("--version", action="version", version=f"notestore {version()}")
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


def data_dir_source(settings: Settings) -> str:
    """Where data_dir came from: its environment variable, the config file, or the default."""
    env = next((k for k in os.environ if k.upper() == "NOTESTORE_DATA_DIR"), None)
    if env is not None:
        return f"environment variable {env}"
    if settings.config_file is None:
        return "the default: ./data"
    try:
        with settings.config_file.open("rb") as f:
            named = "data_dir" in tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        named = True
    if named:
        return f"config file {settings.config_file}"
    return f"the default: data beside config file {settings.config_file}"


def database_url_source(settings: Settings, flags: dict[str, object] | None = None) -> str:
    """Where database_url came from: its option, its environment variable or the config file."""
    if flags and flags.get("database_url") is not None:
        return "option --database-url"
    env = next((k for k in os.environ if k.upper() == "NOTESTORE_DATABASE_URL"), None)
    if env is not None:
        return f"environment variable {env}"
    return f"config file {settings.config_file}" if settings.config_file else "configuration"


def database_problem(
    exc: psycopg.Error, settings: Settings | None, flags: dict[str, object] | None = None
) -> str | None:
    """One line, never with the password, for a PostgreSQL server that cannot be reached or
    used (down, refused, wrong password, missing database, not migrated, not granted);
    None for the rest (a fault in a statement keeps its traceback)."""
    if settings is None or settings.database_url is None:
        return None
    url = settings.database_url
    what = without_password(str(exc), url) or type(exc).__name__
    where = f"database {shown_url(url)} (database_url from {database_url_source(settings, flags)})"
    if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.InvalidSchemaName):
        return f"{where} holds no notestore log yet: run `notestore migrate` as its owner ({what})"
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return (
            f"{where} refused: {what} (the owner grants the service role its privileges with"
            " `notestore migrate --service-role NAME`)"
        )
    if isinstance(exc, psycopg.OperationalError):
        return f"{where} cannot be used: {what}"
    return None


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents or path in folder.parents


def storage_problem(exc: OSError | sqlite3.Error, settings: Settings | None) -> str | None:
    """One line for a data directory (or other file) that cannot be used; None for the rest."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if settings is None or code is None or code & 0xFF not in _FILE_PROBLEMS:
            return None
        what, where = str(exc), None
    else:
        if exc.filename is None:
            return None
        what, where = exc.strerror or str(exc), Path(os.fsdecode(exc.filename))
        if isinstance(exc, FileExistsError) and not where.is_dir():
            what = "Not a directory"  # mkdir(exist_ok=True) on a file
    if settings is not None and (where is None or _inside(where, settings.data_dir)):
        at = f" ({where})" if where is not None and where != settings.data_dir else ""
        return (
            f"data_dir {settings.data_dir} (from {data_dir_source(settings)}) cannot be used: "
            f"{what}{at}"
        )
    return f"{where}: {what}"


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
    except (OSError, sqlite3.Error) as exc:
        problem = storage_problem(exc, getattr(args, "settings", None))
        if problem is None:
            raise
        print(f"notestore {args.command}: {problem}", file=sys.stderr)
        return 2
    except psycopg.Error as exc:
        problem = database_problem(
            exc, getattr(args, "settings", None), getattr(args, "flags", None)
        )
        if problem is None:
            raise
        print(f"notestore {args.command}: {problem}", file=sys.stderr)
        return 2
