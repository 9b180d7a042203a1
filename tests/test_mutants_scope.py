"""Query scopes of bearer tokens and the choice of a merchant's entity, checked directly.

Part of the mutation-testing suite of docs/testing.md: fast, no HTTP.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from app.config import Settings
from app.errors import Forbidden, NotFound, Unauthorized
from app.queries.merchants import Ambiguous, choose_merchant
from app.queries.scope import EVERYTHING, Scope, scope_for


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        tokens={"ops-token": ("*",), "shop-token": ("m-a", "m-b"), "tök": ("m-c",)},
    )


def rows_in(scope: Scope, column: str | None = None) -> list[str]:
    """Run the scope's SQL condition for real against a table of five merchants."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (merchant_id TEXT, shop TEXT)")
    for m in ("m-a", "m-b", "m-c", "m-d", None):
        db.execute("INSERT INTO t VALUES (?, ?)", (m, m))
    condition, params = scope.sql() if column is None else scope.sql(column)
    found = db.execute(f"SELECT merchant_id FROM t WHERE {condition}", params).fetchall()
    return sorted(str(m) for (m,) in found)


def test_everything_sees_every_merchant_and_none() -> None:
    assert EVERYTHING.merchants is None
    assert EVERYTHING.sees("m-a") and EVERYTHING.sees(None)
    assert rows_in(EVERYTHING) == ["None", "m-a", "m-b", "m-c", "m-d"]
    assert EVERYTHING.sql() == ("TRUE", ())


def test_a_scope_sees_only_its_merchants() -> None:
    scope = Scope(frozenset({"m-b", "m-a"}))
    assert scope.sees("m-a") and scope.sees("m-b")
    assert not scope.sees("m-c") and not scope.sees(None) and not scope.sees("")
    assert rows_in(scope) == ["m-a", "m-b"]
    assert rows_in(Scope(frozenset({"m-d"}))) == ["m-d"]
    assert rows_in(scope, "shop") == ["m-a", "m-b"]
    assert scope.sql("shop") == ("shop IN (?, ?)", ("m-a", "m-b"))


def test_no_tokens_configured_is_forbidden_with_how_to_add_one(tmp_path: Path) -> None:
    with pytest.raises(Forbidden) as err:
        scope_for(Settings(data_dir=tmp_path), "Bearer anything")
    assert str(err.value) == (
        "no query tokens are configured: add one under [tokens] in the config"
        ' (e.g. "your-token" = ["*"]); `notestore init` generates one'
    )


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "Bearer    ", "Basic ops-token", "ops-token"]
)
def test_a_missing_or_other_scheme_is_unauthorized(settings: Settings, header: str | None) -> None:
    with pytest.raises(Unauthorized) as err:
        scope_for(settings, header)
    assert str(err.value) == "send Authorization: Bearer <token>"


@pytest.mark.parametrize(
    "header",
    [
        "Bearer nope",
        "Bearer ops",
        "Bearer ops-token2",
        "Bearer OPS-TOKEN",
        "Bearer \udcff",  # an undecodable header byte as aiohttp hands it over
        "Bearer \ud800",  # a surrogate no header byte decodes to
        "Bearer tok",
    ],
)
def test_an_unknown_token_is_unauthorized(settings: Settings, header: str) -> None:
    with pytest.raises(Unauthorized) as err:
        scope_for(settings, header)
    assert str(err.value) == "unknown token"


def test_a_star_token_reads_everything(settings: Settings) -> None:
    assert scope_for(settings, "Bearer ops-token") == EVERYTHING
    assert scope_for(settings, "bearer  ops-token  ").merchants is None
    assert scope_for(settings, "BEARER ops-token").merchants is None


def test_a_merchant_token_reads_its_merchants(settings: Settings) -> None:
    assert scope_for(settings, "Bearer shop-token") == Scope(frozenset({"m-a", "m-b"}))
    assert scope_for(settings, "Bearer tök") == Scope(frozenset({"m-c"}))


def test_one_merchant_holding_the_id_is_chosen() -> None:
    assert choose_merchant(["m-a"], EVERYTHING, None, "note") == "m-a"
    assert choose_merchant(["m-a", "m-a"], EVERYTHING, None, "note") == "m-a"
    assert choose_merchant([""], EVERYTHING, None, "note") == ""


def test_a_scoped_token_never_sees_other_merchants_holding_the_id() -> None:
    scope = Scope(frozenset({"m-b"}))
    assert choose_merchant(["m-a", "m-b", ""], scope, None, "note") == "m-b"
    for held, wanted in [(["m-a", ""], None), (["m-a", "m-b"], "m-a"), ([], None)]:
        with pytest.raises(NotFound) as err:
            choose_merchant(held, scope, wanted, "comment")
        assert str(err.value) == "no comment"


def test_merchant_id_names_one_of_several() -> None:
    assert choose_merchant(["m-b", "m-a"], EVERYTHING, "m-b", "note") == "m-b"
    assert choose_merchant(["m-b", "", "m-a"], EVERYTHING, "", "note") == ""
    with pytest.raises(NotFound) as err:
        choose_merchant(["m-b", "m-a"], EVERYTHING, "m-c", "note")
    assert str(err.value) == "no note"


def test_several_merchants_and_none_named_is_ambiguous_listing_them_in_order() -> None:
    with pytest.raises(Ambiguous) as err:
        choose_merchant(["m-b", "", "m-a", "m-b"], EVERYTHING, None, "note")
    assert err.value.status == 409
    assert err.value.merchants == [None, "m-a", "m-b"]
    assert str(err.value) == (
        "note is held by several merchants ((none), m-a, m-b): name one with ?merchant_id="
        " (--merchant on the command line)"
    )
    with pytest.raises(Ambiguous) as scoped:
        choose_merchant(["m-c", "m-b", "m-a"], Scope(frozenset({"m-a", "m-b"})), None, "note")
    assert scoped.value.merchants == ["m-a", "m-b"]
