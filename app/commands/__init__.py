"""One module per group of subcommands; importing this registers them all."""

from app.commands import ingest, read, views  # noqa: F401
