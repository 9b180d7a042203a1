"""A real PostgreSQL for the tests: a throwaway cluster per session, a fresh database per test.

Use it by binding the fixtures in a test module and naming them as arguments (an assignment
rather than `from tests.pg import pg_url`, which ruff reports as redefined by the argument):

    from tests import pg

    pg_server, pg_database, pg_url = pg.pg_server, pg.pg_database, pg.pg_url

    def test_something(pg_url): ...

`pg_server` (session) starts a PostgreSQL cluster in a temporary folder, listening only on
127.0.0.1 on a free port, with password (SCRAM) authentication on loopback and its unix
socket inside that folder; it is stopped (`pg_ctl stop -m fast`) and the folder removed at
the end of the session. PostgreSQL refuses to run as root, so as root `initdb` and `pg_ctl`
run as the `postgres` user (`runuser -u postgres --`) in a folder it owns. One cluster serves
the whole session even when several modules import the fixture.

`pg_database` / `pg_url` (function) create a database of their own for each test and drop it
afterwards, together with any role named through `pg_database.role(...)`.

`fresh_database(server)` (a context manager) makes another such database wherever one test
needs several, e.g. one per hypothesis example: the PostgreSQL log is append-only, so a fresh
log is a fresh database. `template_database(server, key, prepare)` makes (once per session
and key) a database that `prepare(url)` filled, to clone with `fresh_database(server,
template=...)`: a copy of a migrated database is about three times quicker than migrating
a new one. Templates are dropped when the session ends.

Environment:
- NOTESTORE_TEST_DATABASE_URL: use that server instead of starting one (a
  `postgresql://user:password@host:port/db` URL of a superuser: the tests create databases
  and roles, and check that even a superuser cannot change the log).
- NOTESTORE_PG_BIN: the folder holding `initdb` and `pg_ctl` (default: the newest
  /usr/lib/postgresql/*/bin, else the ones on PATH).
- CI=true: a server that cannot be had FAILS the tests that need it; without CI they are
  skipped, with the reason. So a CI machine missing its install step never passes green.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

START_DEADLINE_S = 60.0  # initdb, start, first connection: each gets at most this long
SUPERUSER = "postgres"


def ci_requires_postgres() -> bool:
    """CI=true (or 1): the PostgreSQL tests must run, so a missing server is a failure."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


class Unavailable(Exception):
    """No PostgreSQL could be started or reached; the message says why."""


@dataclass
class PgServer:
    """A running server and a superuser URL (database `postgres`) to administer it."""

    admin_url: str
    started_here: bool
    stop: list[str] = field(default_factory=list)  # the command that stops it, if ours
    folder: Path | None = None

    def url(self, dbname: str, user: str | None = None, password: str | None = None) -> str:
        """The admin URL pointed at another database (and optionally another user)."""
        return url_for(self.admin_url, dbname=dbname, user=user, password=password)


def url_for(
    url: str, *, dbname: str | None = None, user: str | None = None, password: str | None = None
) -> str:
    """A postgresql:// URL with its database, user or password replaced."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    name = quote(user, safe="") if user is not None else (parts.username or "")
    secret = quote(password, safe="") if password is not None else parts.password
    if user is not None and password is None:
        secret = None
    userinfo = name + (f":{secret}" if secret is not None else "")
    netloc = f"{userinfo}@{host}" if userinfo else host
    path = f"/{quote(dbname, safe='')}" if dbname is not None else parts.path
    return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))


# --- finding and starting a cluster -------------------------------------------------------


def _bin_dir() -> Path:
    configured = os.environ.get("NOTESTORE_PG_BIN")
    if configured is not None:
        folder = Path(configured)
        if not (folder / "initdb").is_file() or not (folder / "pg_ctl").is_file():
            raise Unavailable(f"NOTESTORE_PG_BIN={configured} holds no initdb and pg_ctl")
        return folder

    def version(path: str) -> tuple[int, ...]:
        match = re.search(r"/postgresql/([\d.]+)/bin/", path)
        return tuple(int(p) for p in match.group(1).split(".")) if match else (0,)

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True)
    if found:
        return Path(found[0]).parent
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent
    raise Unavailable(
        "no PostgreSQL binaries: /usr/lib/postgresql/*/bin/initdb is missing and initdb is "
        "not on PATH (Debian: apt-get install -y postgresql; or set NOTESTORE_PG_BIN, or "
        "NOTESTORE_TEST_DATABASE_URL to use a running server)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_for_connection(url: str, deadline: float, alive: Path) -> None:
    """Poll until the server accepts a connection, the deadline passes, or it has died."""
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            psycopg.connect(url, connect_timeout=5).close()
            return
        except psycopg.OperationalError as exc:
            last = exc
        if not alive.exists():
            raise Unavailable(f"the server stopped while starting: {last}")
        time.sleep(0.05)  # polling interval, not a synchronisation
    raise Unavailable(f"the server accepted no connection within {START_DEADLINE_S:.0f} s: {last}")


def _start_cluster() -> PgServer:
    bin_dir = _bin_dir()
    as_root = os.geteuid() == 0
    prefix: list[str] = []
    if as_root:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            raise Unavailable(
                "running as root, and PostgreSQL refuses to run as root, but there is no "
                "`postgres` user to run it as (the Debian package creates it)"
            ) from None
        runuser = shutil.which("runuser")
        if runuser is None:
            raise Unavailable("running as root and `runuser` is missing: cannot become postgres")
        prefix = [runuser, "-u", "postgres", "--"]

    folder = Path(tempfile.mkdtemp(prefix="notestore-pg-"))
    try:
        if as_root:
            os.chown(folder, account.pw_uid, account.pw_gid)
        data = folder / "data"
        password = secrets.token_urlsafe(24)
        pwfile = folder / "pwfile"
        pwfile.write_text(password + "\n")
        if as_root:
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        pwfile.chmod(0o600)

        def run(*args: str, timeout: float = START_DEADLINE_S) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*prefix, *args], cwd=folder, capture_output=True, text=True, timeout=timeout,
                env={**os.environ, "LC_ALL": "C", "LANG": "C"},
            )  # fmt: skip

        init = run(
            str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256", "--auth-local=peer", "-E", "UTF8", "--no-locale",
            "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        if init.returncode != 0:
            raise Unavailable(f"initdb failed ({init.returncode}): {init.stderr.strip()[-800:]}")
        # Only loopback TCP and a socket in our own folder; a throwaway cluster needs no fsync.
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# notestore tests\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{folder}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 200\n"
            )
        pg_ctl = str(bin_dir / "pg_ctl")
        log = folder / "server.log"
        stop = [*prefix, pg_ctl, "stop", "-D", str(data), "-m", "fast", "-w", "-t", "60"]
        for _attempt in range(5):  # another process may take the free port before we do
            port = _free_port()
            deadline = time.monotonic() + START_DEADLINE_S
            started = run(
                pg_ctl, "start", "-D", str(data), "-l", str(log), "-o", f"-p {port}",
                "-w", "-t", str(int(START_DEADLINE_S)),
            )  # fmt: skip
            if started.returncode == 0:
                url = f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{port}/postgres"
                _wait_for_connection(url, deadline, data / "postmaster.pid")
                return PgServer(admin_url=url, started_here=True, stop=stop, folder=folder)
            if "already in use" not in _tail(log, 40):
                raise Unavailable(
                    f"pg_ctl start failed ({started.returncode}): {started.stderr.strip()}\n"
                    f"server log:\n{_tail(log)}"
                )
        raise Unavailable(f"no free port could be bound; server log:\n{_tail(log)}")
    except BaseException:
        if (folder / "data" / "postmaster.pid").exists():  # never leave a server behind
            halt = [*prefix, str(bin_dir / "pg_ctl"), "stop", "-D", str(folder / "data")]
            subprocess.run([*halt, "-m", "immediate"], cwd=folder, capture_output=True, timeout=90)
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _stop_cluster(server: PgServer) -> None:
    if not server.started_here or server.folder is None:
        return
    try:
        stopped = subprocess.run(server.stop, cwd=server.folder, capture_output=True, timeout=90)
        if stopped.returncode != 0:  # still running? do not leave it behind
            immediate = [*server.stop[: server.stop.index("fast")], "immediate"]
            subprocess.run(immediate, cwd=server.folder, capture_output=True, timeout=90)
    finally:
        shutil.rmtree(server.folder, ignore_errors=True)


def restart_cluster(server: PgServer) -> None:
    """Restart a cluster these tests started (fast shutdown: every session is ended, as in a
    real restart); returns once it accepts connections again."""
    if not server.started_here or server.folder is None:
        pytest.skip("restarting needs a PostgreSQL these tests started")
    # -l: the new server's output to its log, or it would hold our pipes open
    restart = [("restart" if arg == "stop" else arg) for arg in server.stop]
    restart += ["-l", str(server.folder / "server.log")]
    done = subprocess.run(restart, cwd=server.folder, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def _use_configured(url: str) -> PgServer:
    try:
        psycopg.connect(url, connect_timeout=10).close()
    except psycopg.Error as exc:
        shown = url_for(url, password="***") if urlsplit(url).password else url
        raise Unavailable(f"NOTESTORE_TEST_DATABASE_URL={shown}: cannot connect: {exc}") from None
    return PgServer(admin_url=url, started_here=False)


class _Shared:
    """One server per session, however many modules import the fixture (each import makes
    its own session-scoped fixture); the last one to finish stops it."""

    server: PgServer | None = None
    reason: str | None = None
    users = 0
    templates: dict[str, str] = {}  # key -> name of a template database (template_database)


def _acquire() -> PgServer:
    if _Shared.server is None and _Shared.reason is None:
        try:
            configured = os.environ.get("NOTESTORE_TEST_DATABASE_URL")
            _Shared.server = _use_configured(configured) if configured else _start_cluster()
        except Unavailable as exc:
            _Shared.reason = str(exc)
        except (OSError, subprocess.SubprocessError) as exc:
            _Shared.reason = f"could not start PostgreSQL: {exc!r}"
    if _Shared.server is None:
        message = f"PostgreSQL is not available: {_Shared.reason}"
        if ci_requires_postgres():
            pytest.fail(f"{message} (CI=true: the PostgreSQL tests must run)", pytrace=False)
        pytest.skip(message)
    _Shared.users += 1
    return _Shared.server


def _release() -> None:
    _Shared.users -= 1
    if _Shared.users == 0 and _Shared.server is not None:
        server, _Shared.server = _Shared.server, None
        templates, _Shared.templates = list(_Shared.templates.values()), {}
        try:
            if templates and not server.started_here:  # ours is removed whole below
                with _admin(server) as admin:
                    for name in templates:
                        _drop_database(admin, name)
        finally:
            _stop_cluster(server)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = _acquire()
    try:
        yield server
    finally:
        _release()


# --- a database per test ------------------------------------------------------------------


@dataclass
class PgDatabase:
    name: str
    url: str  # as the server's superuser (or NOTESTORE_TEST_DATABASE_URL's user)
    server: PgServer
    roles: list[str] = field(default_factory=list)

    def role(self, prefix: str) -> str:
        """A role name unique to this test, dropped after the test (roles are cluster-wide)."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self.roles.append(name)
        return name

    def url_as(self, user: str, password: str) -> str:
        return url_for(self.url, user=user, password=password)


def _admin(server: PgServer) -> psycopg.Connection:
    return psycopg.connect(server.admin_url, autocommit=True, connect_timeout=10)


def _drop_database(admin: psycopg.Connection, name: str) -> None:
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def fresh_database(server: PgServer, template: str | None = None) -> Iterator[PgDatabase]:
    """A new, empty database (or a copy of `template`), dropped on leaving together with the
    roles named through its `role(...)`."""
    name = f"notestore_test_{uuid.uuid4().hex[:12]}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    with _admin(server) as admin:
        if template is not None:
            create += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            if admin.info.server_version >= 150000:  # before 15, FILE_COPY is the only way
                # for a small template, copying its files beats WAL-logging every page
                create += sql.SQL(" STRATEGY FILE_COPY")
        admin.execute(create)
    database = PgDatabase(name=name, url=server.url(name), server=server)
    try:
        yield database
    finally:
        with _admin(server) as admin:
            _drop_database(admin, name)
            for role in database.roles:
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def template_database(server: PgServer, key: str, prepare: Callable[[str], None]) -> str:
    """The name of a database `prepare(url)` filled, made once per session and `key`, to
    clone with `fresh_database(server, template=name)`. `prepare` must close every
    connection it opens (PostgreSQL copies no database anyone is connected to)."""
    if server is not _Shared.server:
        raise RuntimeError("template_database needs the session's server (the pg_server fixture)")
    if key not in _Shared.templates:
        name = f"notestore_template_{uuid.uuid4().hex[:12]}"
        with _admin(server) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            try:
                prepare(server.url(name))
            except BaseException:
                _drop_database(admin, name)
                raise
        _Shared.templates[key] = name
    return _Shared.templates[key]


@pytest.fixture
def pg_database(pg_server: PgServer) -> Iterator[PgDatabase]:
    with fresh_database(pg_server) as database:
        yield database


@pytest.fixture
def pg_url(pg_database: PgDatabase) -> str:
    """A fresh, empty database of this test's own, as a postgresql:// URL (superuser)."""
    return pg_database.url
