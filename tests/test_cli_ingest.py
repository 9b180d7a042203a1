"""init, send and config errors through the real `notestore` command."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.helpers import MERCHANT, SAMPLE_FILES, SECRETS
from tests.server import Server, write_config


def notestore(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "app", *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


def unbound_warnings(log_path: Path) -> list[str]:
    """The app ids serve's log warns may speak for any merchant."""
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    return [line["app_id"] for line in lines if line["event"] == "app_not_bound_to_merchants"]


def test_init_writes_a_starter_and_refuses_to_overwrite(tmp_path):
    done = notestore("init", cwd=tmp_path)
    assert done.returncode == 0 and "notestore.toml" in done.stdout
    config = tomllib.loads((tmp_path / "notestore.toml").read_text())
    assert config["data_dir"] == "data" and len(config["apps"]) == 2
    # each app bound to the samples' merchant, with a fresh secret
    assert all(len(a["secrets"]) == 1 and len(a["secrets"][0]) >= 24 for a in config["apps"].values())
    assert all(a["merchants"] == [MERCHANT] for a in config["apps"].values())
    assert list(config["tokens"].values()) == [["*"]]
    again = notestore("init", cwd=tmp_path)
    assert again.returncode != 0 and "already exists" in again.stderr


def test_the_readme_quick_start_accepts_the_samples_with_the_bound_apps_init_writes(tmp_path):
    assert notestore("init", cwd=tmp_path).returncode == 0
    config = tmp_path / "notestore.toml"
    with Server(config) as server:
        url = f"{server.url}/webhooks/mobio"
        done = notestore("send", *map(str, SAMPLE_FILES), "--config", str(config), "--url", url)
        assert done.returncode == 0, done.stderr
        assert done.stdout.count('200 {"accepted": 1, "duplicates": 0, "quarantined": 0}') == 6
    # bound apps are not warned about; unbound ones are, by name
    assert unbound_warnings(server.log_path) == []


def test_config_errors_are_one_line_without_traceback(tmp_path):
    (tmp_path / "bad.toml").write_text("[apps]\nx = []\n")
    for args in (["serve", "--config", "missing.toml"], ["send", "f", "--config", "bad.toml"]):
        done = notestore(*args, cwd=tmp_path)
        assert done.returncode == 2
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_send_posts_the_six_samples_to_a_running_server(tmp_path):
    config = write_config(tmp_path, SECRETS)
    with Server(config) as server:
        url = f"{server.url}/webhooks/mobio"
        done = notestore("send", *map(str, SAMPLE_FILES), "--config", str(config), "--url", url)
        assert done.returncode == 0, done.stderr
        assert done.stdout.count('200 {"accepted": 1, "duplicates": 0, "quarantined": 0}') == 6
        again = notestore("send", str(SAMPLE_FILES[0]), "--config", str(config), "--url", url)
        assert '"duplicates": 1' in again.stdout
        forged = notestore(
            "send", str(SAMPLE_FILES[0]), "--url", url, "--secret", "wrong", "--config", str(config)
        )
        assert forged.returncode == 1 and "401" in forged.stdout
    assert sorted(unbound_warnings(server.log_path)) == sorted(SECRETS)
