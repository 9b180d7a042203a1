"""Configuration: one frozen object, built once by the CLI (or by a test).

Precedence: flags, then NOTESTORE_* environment variables, then the TOML file,
then defaults. A relative data_dir is resolved against the config file's folder
(the working directory when there is no file).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, TypeGuard
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from app.errors import ConfigError
from projections.storage import Storage, masked

DEFAULT_CONFIG = "notestore.toml"
DATABASE_SCHEMES = ("postgresql", "postgres")


def _passwords(url: str) -> list[str]:
    """Every form in which `url` holds a password (libpq takes one in its user part or as a
    `password=` parameter), as written and decoded, longest first."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    userinfo, at, _ = parts.netloc.rpartition("@")
    written = [userinfo.split(":", 1)[1]] if at and ":" in userinfo else []
    written += re.findall(r"(?:^|&)password=([^&]*)", parts.query)
    found = {form for secret in written for form in (secret, unquote(secret)) if form}
    return sorted(found, key=len, reverse=True)


def shown_url(url: str) -> str:
    """A database URL as notestore shows it (status, logs, errors): never with a password,
    whether in its user part or in a `password=` query parameter."""
    shown = masked(url)
    for secret in _passwords(url):
        shown = shown.replace(secret, "***")
    return re.sub(r"((?:\?|&)password=)[^&]*", r"\1***", shown)


def without_password(text: str, url: str) -> str:
    """`text` (a driver's message about `url`) on one line and with the URL's password hidden:
    libpq echoes parts of a URL it cannot parse."""
    for secret in _passwords(url):
        text = text.replace(secret, "***")
    return " ".join(text.split())


def _must_encode(text: str, what: str) -> None:
    """Secrets and tokens are hashed and compared as UTF-8: a lone surrogate (only an
    environment variable's JSON can carry one) would fail every request later."""
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode text (a lone surrogate)") from None


def _nonempty_strings(value: Any) -> TypeGuard[list[str] | tuple[str, ...]]:
    """A non-empty list of non-empty strings (a TOML array, or a JSON one)."""
    return (
        isinstance(value, list | tuple)
        and bool(value)
        and all(isinstance(item, str) and item for item in value)
    )


class AppConfig(BaseModel):
    """One Mobio app: its secrets (several while rotating) and, if bound, its merchants."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    secrets: tuple[str, ...]
    merchants: frozenset[str] | None = None  # None: unbound, may speak for any merchant

    @classmethod
    def of(cls, app_id: str, entry: Any) -> Any:
        """From `"app" = "secret"`, a list of secrets, or a table {secrets, merchants}."""
        if isinstance(entry, AppConfig):
            return entry
        table = entry if isinstance(entry, dict) else {"secrets": entry}
        secrets = table.get("secrets")
        listed = [secrets] if isinstance(secrets, str) else secrets
        if not _nonempty_strings(listed):
            raise ValueError(f"app {app_id!r} needs a secret (a non-empty string or list of them)")
        _must_encode(app_id, "an app id")
        for secret in listed:
            _must_encode(secret, f"a secret of app {app_id!r}")
        merchants = table.get("merchants")
        if merchants is not None and not _nonempty_strings(merchants):
            raise ValueError(f"app {app_id!r}: merchants must be a non-empty list of merchant ids")
        if merchants is not None and "*" in merchants:
            raise ValueError(
                f'app {app_id!r}: "*" is not a merchant id; leave merchants out to let the app'
                " speak for any merchant"
            )
        for merchant in merchants or ():
            _must_encode(merchant, f"a merchant id of app {app_id!r}")
        return {**table, "secrets": tuple(listed)}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOTESTORE_", frozen=True, extra="forbid")

    data_dir: Path = Path("data")
    # postgresql://user:password@host:port/db: the log and the views live there, and data_dir
    # holds only local files. Unset: SQLite files under data_dir.
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    # Accepted and ignored (serve logs a warning naming it): serve is one process now.
    workers: int | None = None
    apps: dict[str, AppConfig] = {}
    tokens: dict[str, tuple[str, ...]] = {}
    # Signs the inspector's (/ui/) session cookies. Unset: serve makes a random one per
    # process and logs a warning (sessions then end when serve restarts).
    session_secret: str | None = Field(default=None, min_length=16)
    session_hours: float = Field(default=12.0, gt=0, le=24 * 366)
    # Behind a reverse proxy that terminates TLS: count `X-Forwarded-Proto: https` (the value
    # the nearest proxy set) as HTTPS, so the inspector's cookies are `Secure`. Only when every
    # request reaches serve through that proxy: a client talking to serve directly could send it.
    trust_forwarded_proto: bool = False
    # A delivery the log has not committed within this deadline is kept in the spool
    # instead (eventlog.spool), and drained into the log once it commits again.
    log_commit_timeout_ms: int = Field(default=2000, ge=1, le=600_000)
    # Where the spool lives (default: data_dir). Another disk than the log's: a spool on
    # the same full disk cannot help. One spool per instance.
    spool_dir: Path | None = None
    spool_max_bytes: int = Field(default=1 << 30, ge=1 << 16)
    config_file: Path | None = Field(default=None, exclude=True)

    @field_validator("apps", mode="before")
    @classmethod
    def _apps(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {app_id: AppConfig.of(app_id, entry) for app_id, entry in value.items()}

    @field_validator("database_url", mode="before")
    @classmethod
    def _database_url(cls, value: Any) -> Any:
        """A postgresql:// URL libpq can read; empty means unset. The message never holds the
        value: it may carry a password."""
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            return value  # pydantic says it is not a string
        try:
            scheme = urlsplit(value).scheme
        except ValueError:
            scheme = ""
        if scheme not in DATABASE_SCHEMES:
            raise ValueError(
                "must be a postgresql:// (or postgres://) URL, e.g."
                " postgresql://notestore:PASSWORD@localhost/notestore; leave it out for SQLite"
            )
        try:
            conninfo_to_dict(value)
            urlsplit(value).port  # noqa: B018  (raises on a port that is not a number)
        except (psycopg.Error, ValueError) as exc:
            raise ValueError(
                f"is not a URL PostgreSQL can read: {without_password(str(exc), value)}"
            ) from None
        return value

    @field_validator("tokens", mode="before")
    @classmethod
    def _merchants_as_tuples(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for token, merchants in value.items():
                _must_encode(token, "a token")
                for merchant in merchants if isinstance(merchants, list | tuple) else ():
                    if isinstance(merchant, str):
                        _must_encode(merchant, "a token's merchant id")
            return {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        file_values = _FILE_VALUES.get(id(settings_cls), {})
        return (init_settings, env_settings, InitSettingsSource(settings_cls, file_values))

    @property
    def spool_path(self) -> Path:
        """The folder of this instance's spool."""
        return self.spool_dir if self.spool_dir is not None else self.data_dir

    @property
    def storage(self) -> Storage:
        return Storage(self.data_dir, self.database_url)

    @property
    def events_path(self) -> Path:
        return self.data_dir / "events.db"

    @property
    def views_path(self) -> Path:
        return self.data_dir / "views.db"

    def secrets(self) -> list[tuple[str, str]]:
        """Every (app_id, secret) pair the receiver tries."""
        return [(app, s) for app, entry in self.apps.items() for s in entry.secrets]

    def merchants_of(self, app_id: str) -> frozenset[str] | None:
        """The merchants an app may speak for: None for an unbound app (any merchant), none
        for an app no longer configured (a replay of what it sent appends nothing)."""
        entry = self.apps.get(app_id)
        return entry.merchants if entry else frozenset()


# Values read from the TOML file, handed to settings_customise_sources (a classmethod
# with no other way in). Keyed per class so concurrent loads cannot mix.
_FILE_VALUES: dict[int, dict[str, Any]] = {}


@functools.lru_cache(maxsize=256)
def fingerprint(secret: str) -> str:
    """Names a secret without revealing it: stored with each request."""
    return hashlib.sha256(b"notestore-secret-fingerprint:" + secret.encode()).hexdigest()[:16]


def _config_path(flag: str | os.PathLike[str] | None) -> Path | None:
    if flag:
        return Path(flag)
    if os.environ.get("NOTESTORE_CONFIG"):
        return Path(os.environ["NOTESTORE_CONFIG"])
    default = Path(DEFAULT_CONFIG)
    return default if default.is_file() else None


def _read_toml(path: Path, named_by: str = "") -> dict[str, Any]:
    """The file's values; `named_by` says where its name came from when not from --config."""
    where = f"config file {path}{named_by}"
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{where} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror}") from None


def _env_name(field: str) -> str | None:
    """The environment variable that sets `field`, if one is set (matched as pydantic-settings
    matches them: without regard to case)."""
    wanted = f"NOTESTORE_{field}".upper()
    return next((name for name in os.environ if name.upper() == wanted), None)


def _describe(
    exc: ValidationError, path: Path | None, file_values: dict[str, Any], flags: dict[str, Any]
) -> str:
    """The first problem, named by where its value came from: option, variable or file."""
    first = exc.errors(include_url=False)[0]
    loc = [str(p) for p in first["loc"]]
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown setting"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    setting = loc[0] if loc else ""
    env = _env_name(setting) if setting else None
    if flags.get(setting) is not None:
        where, loc = f"option --{setting.replace('_', '-')}", loc[1:]
    elif env is not None:
        where, loc = f"environment variable {env}", loc[1:]
    elif path is not None and setting in file_values:
        where = f"config file {path}"
    else:
        where = "configuration"
    field = f"{'.'.join(loc)}: " if loc else ""
    return f"{where}: {field}{msg}{more}"


def _describe_unparsable(exc: SettingsError) -> str:
    """pydantic-settings could not decode a variable (NOTESTORE_APPS and _TOKENS take JSON)."""
    named = re.search(r'field "(\w+)"', str(exc))
    env = _env_name(named.group(1)) if named else None
    if env is None:
        return f"configuration: {exc}"
    try:
        json.loads(os.environ[env])
    except ValueError as bad:
        return f"environment variable {env} is not valid JSON ({bad}): it takes a JSON object"
    return f"environment variable {env} cannot be read: it takes a JSON object"


def load_settings(config_file: str | os.PathLike[str] | None = None, **flags: Any) -> Settings:
    """Build the settings; raises ConfigError with one readable line naming its source."""
    path = _config_path(config_file)
    from_env = not config_file and os.environ.get("NOTESTORE_CONFIG")
    named_by = " (named by NOTESTORE_CONFIG)" if from_env else ""
    file_values = _read_toml(path, named_by) if path else {}

    class _Loaded(Settings):
        pass

    _FILE_VALUES[id(_Loaded)] = file_values
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        loaded = _Loaded(**given)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, file_values, given)) from None
    except SettingsError as exc:
        raise ConfigError(_describe_unparsable(exc)) from None
    finally:
        _FILE_VALUES.pop(id(_Loaded), None)
    base = path.parent if path else Path.cwd()
    values = {name: getattr(loaded, name) for name in Settings.model_fields}
    values.update(
        data_dir=_resolved(loaded.data_dir, base),
        spool_dir=_resolved(loaded.spool_dir, base) if loaded.spool_dir is not None else None,
        config_file=path.resolve() if path else None,
    )
    return Settings.model_construct(**values)


def _resolved(folder: Path, base: Path) -> Path:
    """A folder from the config: a relative one is taken from the config file's folder."""
    folder = folder.expanduser()
    return (folder if folder.is_absolute() else base / folder).resolve()
