from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from app.config import Settings
from app.web import create_app
from tests.helpers import SECRETS


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
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
