"""One module per group of subcommands; importing this registers them all."""

from app.commands import copy_log, erase, ingest, operations, read, search, views  # noqa: F401
