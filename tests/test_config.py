"""Configuration: file, environment, flags, their precedence and path rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import load_settings, shown_url, without_password
from app.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert (s.data_dir, s.host, s.port, s.max_body_bytes) == (
        tmp_path / "data",
        "127.0.0.1",
        8080,
        1048576,
    )


def test_file_values_and_relative_data_dir_resolved_against_the_files_folder(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    cfg = write(
        tmp_path / "n.toml",
        'data_dir = "store"\nport = 9001\n[apps]\na = "s"\nb = ["old", "new"]\n',
    )
    s = load_settings(cfg)
    assert s.data_dir == tmp_path / "store" and s.port == 9001
    assert {k: v.secrets for k, v in s.apps.items()} == {"a": ("s",), "b": ("old", "new")}
    assert s.secrets() == [("a", "s"), ("b", "old"), ("b", "new")]


def test_precedence_is_flag_then_env_then_file(tmp_path, monkeypatch):
    cfg = write(tmp_path / "n.toml", 'port = 9001\nhost = "file"\n[apps]\na = "file-secret"\n')
    monkeypatch.setenv("NOTESTORE_PORT", "9002")
    monkeypatch.setenv("NOTESTORE_APPS", '{"a": "env-secret"}')
    s = load_settings(cfg, port=9003)
    assert (s.port, s.host, s.apps["a"].secrets) == (9003, "file", ("env-secret",))


def test_notestore_config_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTESTORE_CONFIG", str(write(tmp_path / "x.toml", "port = 7777\n")))
    assert load_settings().port == 7777


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("port = ", "not valid TOML"),
        ('[apps]\na = ""\n', "needs a secret"),
        ("[apps]\na = []\n", "needs a secret"),
        ("prot = 1\n", "unknown setting"),
        ('port = "x"\n', "port"),
    ],
)
def test_bad_configs_raise_one_readable_line(tmp_path, text, needle):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path / "bad.toml", text))
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("NOTESTORE_PORT", "abc", "environment variable NOTESTORE_PORT: Input should be a valid"),
        ("notestore_port", "abc", "environment variable notestore_port: "),
        ("NOTESTORE_APPS", "x=y", "environment variable NOTESTORE_APPS is not valid JSON"),
        ("NOTESTORE_APPS", '{"a": ""}', "environment variable NOTESTORE_APPS: app 'a' needs"),
        ("NOTESTORE_TOKENS", "{", "environment variable NOTESTORE_TOKENS is not valid JSON"),
    ],
)
def test_a_bad_variable_is_named_not_the_file(tmp_path, monkeypatch, variable, value, needle):
    cfg = write(tmp_path / "n.toml", 'port = 9001\n[apps]\na = "file-secret"\n')
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    message = str(info.value)
    assert message.startswith(needle) and "\n" not in message
    assert "config file" not in message
    assert value not in message  # a variable may hold secrets: its value is never echoed


def test_a_bad_option_is_named_as_the_option(tmp_path):
    cfg = write(tmp_path / "n.toml", "port = 9001\n")
    with pytest.raises(ConfigError, match=r"^option --port: Input should be less than"):
        load_settings(cfg, port=70000)


def test_a_missing_file_named_by_the_variable_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTESTORE_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match=r"gone\.toml \(named by NOTESTORE_CONFIG\) not found"):
        load_settings()


def test_the_readmes_example_config_loads(tmp_path):
    """The README's example is a config notestore takes, bound and unbound apps alike."""
    import re

    from tests.helpers import ROOT

    block = re.search(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block is not None
    s = load_settings(write(tmp_path / "n.toml", block.group(1)))
    assert s.merchants_of("16453496-6a17-11ed-8a77-6632ed169876") == {
        "1b99bdcf-d582-4f49-9715-1b61dfff3924"
    }
    assert s.merchants_of("c71f0b7a-6ecc-11ed-9704-468042e8692e") is None
    assert s.apps["16453496-6a17-11ed-8a77-6632ed169876"].secrets == ("old-secret", "new-secret")


def test_a_bound_app_names_merchants_not_a_star(tmp_path):
    cfg = write(tmp_path / "n.toml", '[apps.a]\nsecrets = ["s"]\nmerchants = ["*"]\n')
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert "leave merchants out" in str(err.value) and str(cfg) in str(err.value)


SECRET = "Pa55-never-shown"


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        (f"mysql://u:{SECRET}@localhost/db", "must be a postgresql:// (or postgres://) URL"),
        (f"localhost:5432/db?password={SECRET}", "must be a postgresql://"),
        (f"postgresql://u:{SECRET}%zz@localhost/db", "is not a URL PostgreSQL can read"),
        (f"postgresql://u:{SECRET}@localhost:port/db", "is not a URL PostgreSQL can read"),
        (f"postgresql://u@localhost/db?password={SECRET}&nonsense=1", "PostgreSQL can read"),
    ],
)
def test_a_bad_database_url_is_one_line_without_its_password(tmp_path, monkeypatch, url, needle):
    monkeypatch.setenv("NOTESTORE_DATABASE_URL", url)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith("environment variable NOTESTORE_DATABASE_URL: ")
    assert needle in message and "\n" not in message and SECRET not in message
    cfg = write(tmp_path / "n.toml", f"database_url = {url!r}\n".replace("'", '"'))
    monkeypatch.delenv("NOTESTORE_DATABASE_URL")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert str(info.value).startswith(f"config file {cfg}: database_url: ")
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    "url", ["postgresql://notestore@db.internal/notestore", "postgres://u:p@[::1]:5433/n"]
)
def test_a_postgresql_url_chooses_postgresql(url, monkeypatch):
    monkeypatch.setenv("NOTESTORE_DATABASE_URL", url)
    settings = load_settings()
    assert settings.database_url == url and settings.storage.backend == "postgresql"


def test_an_empty_database_url_means_sqlite(monkeypatch):
    monkeypatch.setenv("NOTESTORE_DATABASE_URL", "")
    assert load_settings().storage.backend == "sqlite"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://u:{SECRET}@h:5/db", "postgresql://u:***@h:5/db"),
        (f"postgresql://u:{SECRET}%2F@h/db", "postgresql://u:***@h/db"),
        (f"postgresql://u@h/db?sslmode=require&password={SECRET}", "postgresql://u@h/db?sslmode=require&password=***"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
    ],
)  # fmt: skip
def test_a_shown_database_url_never_holds_its_password(url, shown):
    assert shown_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [f"postgresql://u:{SECRET}@h/db", f"postgresql://u@h/db?password={SECRET}"],
)
def test_a_drivers_message_is_one_line_without_the_password(url):
    message = f'invalid percent-encoded token: "{SECRET}"\n\tthere'
    assert without_password(message, url) == 'invalid percent-encoded token: "***" there'
