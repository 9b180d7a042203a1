"""One module per group of subcommands; importing this registers them all."""

from app.commands import ingest, operations, read, search, views  # noqa: F401
