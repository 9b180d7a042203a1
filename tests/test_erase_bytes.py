"""notestore erase, the bytes (issue 16, point 6): once a note is erased, its text is in no
file of the data directory (the log, the views, the search index, the spool, their WAL
files: read byte by byte) while serve still holds its connections open, and in no tuple of
any table of the PostgreSQL database, dead ones included (VACUUM took them)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from app.config import Settings
from app.scrub import scrub
from app.web import create_app
from eventlog.db import LOG_FILE
from eventlog.spool import read_stats
from projections.store import open_views
from projections.textfold import indexed_words
from tests.backends import held_write_lock
from tests.helpers import signed_post, wait_for
from tests.test_erase import MARK, MERCHANT, NOTE, PHONE, backend, erase, note_bodies

pytestmark = pytest.mark.backends("sqlite", "postgresql")

# What must be gone, as stored and as the search index folds it (its words joined by a
# space; FTS5 also keeps each word alone in its segments: "zebra" and "quokka" are words no
# hash or number can hold, unlike "7781" or the phone's groups of digits).
TRACES = sorted(
    {MARK, PHONE, indexed_words(MARK), indexed_words(PHONE), "zebra", "quokka"},
    key=len,
)


def data_files(folder: Path) -> dict[Path, bytes]:
    """The raw bytes of every file under folder, recursively."""
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def traces_in_files(folder: Path) -> dict[str, list[str]]:
    """Each file (relative name) holding any trace, with the traces it holds."""
    found = {}
    for path, data in data_files(folder).items():
        held = [t for t in TRACES if t.encode() in data]
        if held:
            found[str(path.relative_to(folder))] = held
    return found


def quick(settings: Settings) -> Settings:
    return settings.model_copy(update={"log_commit_timeout_ms": 300})


def spool_depth(settings: Settings) -> int:
    stats = read_stats(settings.spool_path)
    return 0 if stats is None else stats.waiting


async def test_an_erased_note_leaves_no_byte_of_its_text_in_the_data_dir_or_the_database(
    aiohttp_client: Any, settings: Settings, tmp_path: Path
) -> None:
    """serve receives the note (two of its deliveries through the spool, while the log is
    held), folds it (the search view indexes it), and is still running, its connections
    open, when `notestore erase --note` runs."""
    settings = quick(settings)
    client = await aiohttp_client(create_app(settings))
    first, *rest = note_bodies()
    assert (await signed_post(client, first))[0] == 200
    with held_write_lock(settings.storage):
        for body in rest[:2]:
            status, answer = await signed_post(client, body)
            assert (status, answer["spooled"]) == (200, True)
        spooled = data_files(settings.spool_path)
        assert any(MARK.encode() in data for data in spooled.values())  # the spool held it
    await wait_for(lambda: spool_depth(settings) == 0, 30, "the spool drained")
    for body in rest[2:]:
        assert (await signed_post(client, body))[0] == 200
    await wait_for(lambda: _searchable(client), 30, "the search view indexed the note")
    if settings.database_url is None:
        before = traces_in_files(settings.data_dir)
        assert indexed_words(MARK) in before.get("views.db", []) + before.get("views.db-wal", [])

    erased = await asyncio.to_thread(
        erase, settings, tmp_path, "--note", NOTE, "--merchant", MERCHANT
    )
    assert erased == 0

    in_files = traces_in_files(settings.data_dir)
    assert in_files == {}, f"erased text still in {in_files}"
    if settings.database_url is not None:
        in_tables = _traces_in_tables(settings.database_url)
        assert in_tables == [], f"erased text still in {in_tables}"
        in_tuples = _traces_in_tuples(settings.database_url)
        assert in_tuples == [], f"erased text still in row versions of {in_tuples}"
        in_indexes = _traces_in_indexes(settings.database_url)
        assert in_indexes == [], f"erased text still in the pages of indexes {in_indexes}"
    assert (await client.get(f"/notes/{NOTE}", headers=_ops())).status == 410


def _ops() -> dict[str, str]:
    return {"Authorization": "Bearer ops-token"}


async def _searchable(client: Any) -> bool:
    """Every view is built, and the search view has indexed the note: searching its words
    finds it."""
    health = await (await client.get("/healthz")).json()
    if health.get("views_catching_up") != []:
        return False
    resp = await client.get("/search", params={"q": indexed_words(MARK)}, headers=_ops())
    if resp.status != 200:  # still being built
        return False
    return NOTE in [item["note_id"] for item in (await resp.json())["items"]]


def _traces_in_tables(url: str) -> list[tuple[str, str]]:
    """(table, trace) for every table of every schema whose rows, as text, hold a trace."""
    found = []
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT schemaname, tablename FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        for schema, table in tables:
            select = sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(schema, table))
            try:
                text = "\n".join(row[0] for row in conn.execute(select))
            except psycopg.errors.UndefinedTable:
                continue  # dropped since listed (a view's rebuild): its rows went with it
            found += [(f"{schema}.{table}", t) for t in TRACES if t in text]
    return found


def _traces_in_tuples(url: str) -> list[tuple[str, str]]:
    """(relation, trace) for every tuple of every table (TOAST tables included) of the
    database, live or dead, that holds a trace: pageinspect reads each page as stored, so
    an UPDATE's old row version counts until VACUUM removes it."""
    items = "SELECT t_data FROM heap_page_items(get_raw_page(%s, %s)) WHERE t_data IS NOT NULL"
    return _traces_in_pages(url, ("r", "t", "m"), items)


def _traces_in_indexes(url: str) -> list[tuple[str, str]]:
    """(index, trace) for every page of every index that holds a trace, entries removed by
    VACUUM included (their bytes stay) and a GIN index's keys (never removed)."""
    return _traces_in_pages(url, ("i",), "SELECT get_raw_page(%s, %s)")


def _traces_in_pages(url: str, kinds: tuple[str, ...], read: str) -> list[tuple[str, str]]:
    """(relation, trace) for each relation of those kinds (pg_class.relkind) with a block
    whose bytes, as `read` returns them from (relation, block), hold a trace."""
    found = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
        try:
            relations = conn.execute(
                "SELECT c.oid::regclass::text,"
                " pg_relation_size(c.oid) / current_setting('block_size')::int"
                " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relkind = ANY(%s) AND c.relpersistence = 'p'"
                " AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
                (list(kinds),),
            ).fetchall()
            for relation, blocks in relations:
                for block in range(int(blocks)):
                    try:
                        chunks = [bytes(r[0]) for r in conn.execute(read, (relation, block))]
                    except psycopg.errors.UndefinedTable:
                        break  # dropped since listed: its files went with it
                    found += [(relation, t) for t in TRACES for c in chunks if t.encode() in c]
        finally:
            conn.execute("DROP EXTENSION pageinspect")
    return sorted(set(found))


@pytest.mark.backends("sqlite")
def test_a_reader_holding_a_snapshot_keeps_the_wal_and_scrub_says_so(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """A TRUNCATE checkpoint cannot pass a reader still reading an older snapshot: scrub tries
    again until its deadline, then warns (naming the file) instead of claiming success; once
    the reader is done, it empties the WAL."""
    settings.storage.prepare()
    views = open_views(settings.data_dir)
    reader = sqlite3.connect(settings.data_dir / "views.db", isolation_level=None)
    try:
        views.execute("INSERT INTO projector_errors (name, error, at) VALUES ('x', 'y', 0)")
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM projector_errors").fetchone()  # a snapshot, held
        assert scrub(settings, None, deadline_s=0.3) is False
        err = capsys.readouterr().err
        assert "views.db" in err and "still" in err, err
        reader.execute("COMMIT")
        assert scrub(settings, None) is True
        assert (settings.data_dir / "views.db-wal").stat().st_size == 0
    finally:
        reader.close()
        views.close()


def test_sqlite_connections_that_write_have_secure_delete_on(settings: Settings) -> None:
    from eventlog.db import open_log
    from eventlog.spool import open_spool_db

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    for conn in (open_log(settings.data_dir), open_spool_db(settings.spool_path)):
        try:
            assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
        finally:
            conn.close()


@pytest.mark.backends("sqlite")
def test_free_pages_an_older_notestore_left_unzeroed_in_the_log_are_zeroed(
    settings: Settings, tmp_path: Path
) -> None:
    """A log written before secure_delete was on: a table dropped then (as a migration that
    copies a table drops the old one) left its pages on the freelist, text and all. The log
    is not VACUUMed, but its free pages are overwritten with zeros."""
    settings.storage.prepare()
    old = sqlite3.connect(settings.data_dir / LOG_FILE, isolation_level=None)
    try:
        old.execute("PRAGMA secure_delete = OFF")
        old.execute("CREATE TABLE events_old (block TEXT)")
        old.executemany(
            "INSERT INTO events_old VALUES (?)", [(f"{MARK} {PHONE} {i}",) for i in range(500)]
        )
        old.execute("DROP TABLE events_old")
        assert old.execute("PRAGMA freelist_count").fetchone()[0] > 0
    finally:
        old.close()
    assert MARK.encode() in (settings.data_dir / LOG_FILE).read_bytes()
    backend(settings).append_bodies(note_bodies())
    assert erase(settings, tmp_path, "--note", NOTE, "--merchant", MERCHANT) == 0
    in_files = traces_in_files(settings.data_dir)
    assert in_files == {}, f"erased text still in {in_files}"
    log = sqlite3.connect(settings.data_dir / LOG_FILE)
    try:  # the fill table is gone again, and the log holds its tables only
        names = {r[0] for r in log.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        log.close()
    assert not any("fill" in name for name in names), names
