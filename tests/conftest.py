"""Shared fixtures. `settings` (and `client`, the app over it) use SQLite under tmp_path; a
module or test marked `@pytest.mark.backends("sqlite", "postgresql")` runs once on each,
the PostgreSQL case on a fresh database of tests/pg.py's server (skipped without one
locally, failing with CI=true). A test's own marker wins over its module's. Only tests that
take `settings`, `client` or `database_url` are run on each backend: a marked test that builds
its own storage runs once, on what it builds."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from app.config import Settings
from app.web import create_app
from projections.storage import POSTGRESQL, SQLITE
from tests import pg
from tests.helpers import SECRETS

pg_server, pg_database, pg_url = pg.pg_server, pg.pg_database, pg.pg_url


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "backends(*names): run the test's `settings` on each storage backend named"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("backends")
    if marker is not None and "storage_backend" in metafunc.fixturenames:
        metafunc.parametrize("storage_backend", marker.args, indirect=True)


@pytest.fixture
def storage_backend(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", SQLITE))


@pytest.fixture
def database_url(request: pytest.FixtureRequest, storage_backend: str) -> str | None:
    """None for SQLite; a fresh PostgreSQL database's URL for PostgreSQL."""
    if storage_backend == POSTGRESQL:
        return str(request.getfixturevalue("pg_url"))
    return None


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        apps=SECRETS,
        tokens={"ops-token": ("*",), "merchant-token": ("1b99bdcf-d582-4f49-9715-1b61dfff3924",)},
        max_body_bytes=64 * 1024,
    )


@pytest.fixture
async def client(aiohttp_client, settings: Settings) -> TestClient:  # type: ignore[no-untyped-def]
    return await aiohttp_client(create_app(settings))


@pytest.fixture
def settings_(settings: Settings) -> Settings:
    """The same settings under another name, for hypothesis tests whose `settings` is taken."""
    return settings
