"""The inspector's pages in process, on both backends: the same query functions as the API
answer them on SQLite and PostgreSQL; plus the pieces the pages are made of."""

from __future__ import annotations

import datetime
import gc
import json
import re
import ssl
import time
import urllib.parse
import urllib.request
from http.cookies import SimpleCookie

import jinja2
import psycopg
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from psycopg import sql

from app.config import Settings, fingerprint, load_settings
from app.keys import RUNNER, SETTINGS
from app.queries.activity import DAY, events_per_day
from app.queries.scope import EVERYTHING, Scope
from app.starter import write_starter
from app.ui import chart, render
from app.ui.admin import today_start
from app.ui.guard import set_cookie
from app.ui.session import Signer, new_session, safe_next
from app.ui.timeline import around_the_change, field_changes, timeline
from app.web import create_app
from eventlog.append import Delivery
from eventlog.intake import read_body
from projections.comments import CommentsProjector
from projections.mentions import MentionsProjector
from projections.storage import Storage
from tests import ui_kit
from tests.helpers import (
    APP_A,
    MERCHANT,
    SECRETS,
    make_block,
    make_body,
    secret_for,
    settled,
    signature,
    signed_post,
    wait_for,
)
from tests.server import Server, write_config
from tests.ui_kit import OTHER, bodies

pytestmark = pytest.mark.backends("sqlite", "postgresql")
EVERY_VIEW = ("notes", "comments", "mentions", "search")  # the pages read search too


async def signed_in(client, token: str) -> None:  # type: ignore[no-untyped-def]
    form = await (await client.get("/ui/login")).text()
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    resp = await client.post("/ui/login", data={"token": token, "csrf": csrf, "next": "/ui/"},
                             allow_redirects=False)  # fmt: skip
    assert resp.status == 303 and resp.headers["Location"] == "/ui/"


async def story(client, settings) -> None:  # type: ignore[no-untyped-def]
    for body in bodies():
        status, _ = await signed_post(client, body)
        assert status == 200
    await settled(settings, views_named=EVERY_VIEW)


async def test_the_status_chart_counts_only_the_tokens_merchants(client, settings):
    await story(client, settings)  # 36 events of merchant A, 1 of B, 1 quarantined
    for token, counted in (("merchant-token", 36), ("ops-token", 37)):
        client.session.cookie_jar.clear()
        await signed_in(client, token)
        page = await (await client.get("/ui/status")).text()
        assert f'<desc id="chart-desc">{counted} events in 30 days' in page, token
        assert page.count('class="bar"') == 30
        # the log's counts span every merchant: only a "*" token sees them
        assert ("37 events, 3 requests, 1 quarantined" in page) == (token == "ops-token")


async def test_events_fall_on_the_day_they_were_received_on_either_backend(client, settings):
    """Late in a day (0.7 of it gone) and early (0.3): days are floored, never rounded."""
    await signed_post(client, make_body(make_block(), make_block()))
    log = settings.storage.log_reader()
    try:
        (received,) = {row[0] for row in log.execute("SELECT received_at FROM events")}
        late = events_per_day(log, EVERYTHING, received - 0.7 * DAY)
        early = events_per_day(log, EVERYTHING, received + 0.3 * DAY)
        merchant_b = events_per_day(log, Scope(frozenset({OTHER})), received - 0.7 * DAY)
    finally:
        log.close()
    assert (late[-1], sum(late), early[-2], sum(early), sum(merchant_b)) == (2, 2, 2, 2, 0)


async def test_the_note_page_shows_the_story_and_the_note_as_of_a_time(client, settings):
    await story(client, settings)
    await signed_in(client, "merchant-token")
    page = await (await client.get("/ui/notes/n-story")).text()
    assert '<span class="from">&lt;p&gt;Old words of the story&lt;/p&gt;</span>' in page
    assert "New words of the story" in page and "deal: deal-shared" in page
    then = await (await client.get("/ui/notes/n-story?as_of=2022-11-24T00:00Z")).text()
    section = then.split('<section aria-labelledby="then-title"', 1)[1].split("</section>", 1)[0]
    assert "Old words of the story" in section and "New words" not in section
    before = await (await client.get("/ui/notes/n-story?as_of=2000-01-01T00:00Z")).text()
    assert "The note did not exist yet." in before


async def test_the_search_page_finds_words_without_their_accents_within_the_tokens_merchants(
    client, settings
):
    await story(client, settings)
    await signed_in(client, "merchant-token")
    page = await (await client.get("/ui/search?q=STÓRY")).text()
    assert re.findall(r">(n-[a-z-]+)</a>", page) == ["n-story"] and "<mark>story</mark>" in page
    assert "n-other" not in await (await client.get("/ui/search?q=secret")).text()
    client.session.cookie_jar.clear()
    await signed_in(client, "ops-token")
    assert re.findall(r">(n-other)</a>", await (await client.get("/ui/search?q=secret")).text())


async def test_a_quarantined_item_is_replayed_from_its_page(client, settings):
    await story(client, settings)
    await signed_in(client, "ops-token")
    page = await (await client.get("/ui/quarantine")).text()
    assert "implausible_time" in page and "Last replay" not in page
    item = re.search(r'action="(/ui/quarantine/\d+/replay)"', page).group(1)  # type: ignore[union-attr]
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    resp = await client.post(item, data={"csrf": csrf})
    replayed = await resp.text()
    assert resp.status == 200 and "?replayed=" in str(resp.url)
    assert re.search(r'role="status">Last replay: <strong>still_failing</strong>', replayed)
    client.session.cookie_jar.clear()
    await signed_in(client, "merchant-token")
    assert (await client.get("/ui/quarantine")).status == 403
    assert (await client.post(item, data={"csrf": csrf})).status == 403


async def test_a_note_known_only_from_its_comments_shows_its_history_and_thread(client, settings):
    """As Mobio's samples: the comments name a note whose own events never came."""

    def comment(merchant: str) -> dict:  # type: ignore[type-arg]
        return make_block("note_comment_create", merchant_id=merchant, event_detail=[
            {"field_key": "object_id", "add": [f"n-{merchant}"]},
            {"field_key": "description", "add": [f"said under {merchant}"]}])  # fmt: skip

    theirs = make_body(comment(OTHER))
    theirs["merchant_id"] = OTHER
    await signed_post(client, make_body(comment(MERCHANT)))
    await signed_post(client, theirs)
    await settled(settings, views_named=EVERY_VIEW)
    await signed_in(client, "merchant-token")
    resp = await client.get(f"/ui/notes/n-{MERCHANT}")
    page = await resp.text()
    assert resp.status == 200 and "No event of the note itself has arrived" in page
    assert "note_comment_create" in page and page.count(f"said under {MERCHANT}") == 2
    assert (await client.get(f"/ui/notes/n-{OTHER}")).status == 404
    then = await (await client.get(f"/ui/notes/n-{MERCHANT}?as_of=2030-01-01T00:00Z")).text()
    assert "only events of its comments (the timeline below)" in then
    assert "The note did not exist yet." not in then


async def test_home_lists_the_most_recently_changed_notes_first_and_pages(client, settings):
    blocks = [make_block(note_id=f"n-{i:02d}", action_time=1669200000.0 + i) for i in range(30)]
    await signed_post(client, make_body(*blocks))
    await settled(settings, views_named=EVERY_VIEW)
    await signed_in(client, "merchant-token")
    first = await (await client.get("/ui/")).text()
    shown = re.findall(r">(n-\d\d)</a>", first)
    assert shown == [f"n-{i:02d}" for i in range(29, 4, -1)]
    older = re.search(r'rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
    rest = re.findall(r">(n-\d\d)</a>", await (await client.get(older)).text())
    assert rest == [f"n-{i:02d}" for i in range(4, -1, -1)]


async def test_a_note_id_held_by_two_merchants_asks_which_one(client, settings):
    ours = make_block(note_id="n-twice", description="ours")
    theirs = make_body(make_block(note_id="n-twice", merchant_id=OTHER))
    theirs["merchant_id"] = OTHER
    await signed_post(client, make_body(ours))
    await signed_post(client, theirs)
    await settled(settings, views_named=EVERY_VIEW)
    await signed_in(client, "ops-token")
    resp = await client.get("/ui/notes/n-twice")
    assert resp.status == 409 and f"?merchant_id={OTHER}" in await resp.text()
    assert (await client.get(f"/ui/notes/n-twice?merchant_id={OTHER}")).status == 200


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(
    ("wanted", "goes_to"),
    [("/ui/notes/a?x=1", "/ui/notes/a?x=1"), ("/ui/", "/ui/"), (None, "/ui/"),
     ("/notes/a", "/ui/"), ("https://evil.example/ui/", "/ui/"), ("//evil.example/ui/", "/ui/"),
     ("/ui/../notes/a", "/ui/"), ("/ui/%2E%2E/notes", "/ui/"), ("/ui\\evil", "/ui/"),
     ("/ui/\nx", "/ui/"), ("/uix", "/ui/")],
)  # fmt: skip
def test_only_ui_paths_are_accepted_as_the_way_back(wanted, goes_to):
    assert safe_next(wanted) == goes_to


@pytest.mark.backends("sqlite")
def test_a_session_cookie_is_checked_by_its_signature_and_expiry():
    signer = Signer("secret-one-that-is-long-enough")
    session = new_session("some-token", hours=1)
    cookie = signer.cookie(session)
    assert signer.session(cookie) == session and "some-token" not in cookie
    assert Signer("another-secret-long-enough").session(cookie) is None
    assert signer.session(cookie, now=session.expires + 1) is None
    payload, mac = cookie.split(".")
    assert signer.session(f"{payload[:-2]}xx.{mac}") is None
    assert signer.csrf_ok(session.nonce, signer.csrf(session.nonce))
    assert not signer.csrf_ok(session.nonce, signer.csrf("other")) and not signer.csrf_ok(None, "")


@pytest.mark.backends("sqlite")
def test_a_diff_is_read_field_by_field():
    """Registers show from -> to; list fields their elements added and removed; a delete's
    remove is the value just before deletion."""
    update = field_changes("note_update_data", [
        {"field_key": "description", "change": [{"from": "a", "to": "b"}]},
        {"field_key": "mention", "change": [{"from": [["x", "y"]], "to": [["y", "z"]]}]},
        {"field_key": "attachment_ids", "add": [[]], "remove": ["f1"]},
    ])  # fmt: skip
    assert [(c.name, c.changed, c.added, c.removed) for c in update] == [
        ("description", [("a", "b")], [], []),
        ("mentions", [], ["z"], ["x"]),
        ("attachment_ids", [], [], ["f1"]),
    ]
    (deleted,) = field_changes("note_delete", [{"field_key": "description", "remove": ["last"]}])
    assert (deleted.last_values, deleted.removed) == (["last"], [])


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_no_chromium_skips_locally_and_fails_on_ci(monkeypatch, tmp_path, ci, outcome):
    monkeypatch.setattr(ui_kit, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="apt-get install -y chromium"):
        ui_kit.chromium_or_skip()


@pytest.mark.backends("sqlite")
def test_notestore_init_writes_a_session_secret(tmp_path):
    write_starter(tmp_path / "notestore.toml")
    settings = load_settings(tmp_path / "notestore.toml")
    assert settings.session_hours == 12 and len(settings.session_secret or "") >= 32


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize("https", [False, True])
def test_the_session_cookie_is_secure_exactly_when_served_over_https(https):
    app = web.Application()
    app[SETTINGS] = Settings()
    request = make_mocked_request(
        "GET", "/ui/", sslcontext=ssl.create_default_context() if https else None, app=app
    )
    response = web.Response()
    set_cookie(request, response, "notestore_session", "value", 60)
    morsel = response.cookies["notestore_session"]
    assert (bool(morsel["secure"]), morsel["httponly"], morsel["samesite"], morsel["path"]) == (
        https, True, "Strict", "/ui",
    )  # fmt: skip


@pytest.mark.backends("sqlite")
def test_a_long_text_changed_is_shown_around_what_changed():
    before, after = "a" * 300 + " old " + "z" * 300, "a" * 300 + " new words " + "z" * 300
    assert around_the_change(before, after) == (
        # 60 characters kept either side of what differs, the shared spaces among them
        "…" + "a" * 59 + " old " + "z" * 59 + "…",
        "…" + "a" * 59 + " new words " + "z" * 59 + "…",
    )
    assert around_the_change("short", "text") == ("short", "text")
    assert around_the_change("x" * 300, "x" * 300 + "y") == ("…" + "x" * 60, "…" + "x" * 60 + "y")
    assert around_the_change(None, "x" * 300) == (None, "x" * 300)


def _set_cookies(resp) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """The cookies an answer sets, by name, read from its Set-Cookie headers as sent."""
    found: SimpleCookie = SimpleCookie()
    for header in resp.headers.getall("Set-Cookie", ()):
        found.load(header)
    return dict(found)


async def _sign_in_through(client, token: str, proto: str | None) -> tuple[dict, dict]:  # type: ignore[no-untyped-def]
    """Sign in as a browser would behind a proxy sending `X-Forwarded-Proto: proto` (none if
    None): the cookies the form and the sign-in set. Cookies are sent by hand (a Secure
    cookie is not sent back over plain HTTP by the client's jar)."""
    headers = {} if proto is None else {"X-Forwarded-Proto": proto}
    form = await client.get("/ui/login", headers=headers)
    form_cookies = _set_cookies(form)
    csrf = re.search(r'name="csrf" value="([^"]+)"', await form.text()).group(1)  # type: ignore[union-attr]
    nonce = form_cookies["notestore_login"].value  # type: ignore[attr-defined]
    signed = await client.post(
        "/ui/login", data={"token": "ops-token", "csrf": csrf, "next": "/ui/status"},
        headers={**headers, "Cookie": f"notestore_login={nonce}"}, allow_redirects=False,
    )  # fmt: skip
    assert signed.status == 303 and signed.headers["Location"] == "/ui/status"
    return form_cookies, _set_cookies(signed)


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(
    ("trusted", "proto", "secure"),
    [(False, "https", False), (False, None, False), (True, "https", True), (True, "HTTPS", True),
     (True, "http", False), (True, None, False), (True, "http, https", True),
     (True, "https, http", False)],
)  # fmt: skip
async def test_x_forwarded_proto_makes_the_cookies_secure_only_when_trusted(
    aiohttp_client, settings, trusted, proto, secure
):
    """Behind a proxy terminating TLS, `X-Forwarded-Proto: https` (its last value: what the
    nearest proxy set) counts as HTTPS only with trust_forwarded_proto; never by default."""
    assert Settings().trust_forwarded_proto is False
    client = await aiohttp_client(
        create_app(settings.model_copy(update={"trust_forwarded_proto": trusted}))
    )
    form_cookies, session_cookies = await _sign_in_through(client, "ops-token", proto)
    login, session = form_cookies["notestore_login"], session_cookies["notestore_session"]
    assert (bool(login["secure"]), bool(session["secure"])) == (secure, secure)  # type: ignore[index]
    assert (session["httponly"], session["samesite"], session["path"]) == (True, "Strict", "/ui")  # type: ignore[index]
    # the session works either way (the browser, on HTTPS, sends a Secure cookie back)
    resp = await client.get(
        "/ui/status", headers={"Cookie": f"notestore_session={session.value}"},  # type: ignore[attr-defined]
        allow_redirects=False,
    )  # fmt: skip
    assert resp.status == 200


@pytest.mark.backends("sqlite")
def test_serve_reads_trust_forwarded_proto_from_its_config(tmp_path):
    """A real `notestore serve` on 127.0.0.1 with `trust_forwarded_proto = true` in its file:
    a sign-in forwarded as HTTPS sets a Secure session cookie, one forwarded as HTTP does not."""
    config = write_config(tmp_path, SECRETS, {"ops-token": ["*"]},
                          session_secret="a-session-secret-for-this-test",
                          trust_forwarded_proto=True)  # fmt: skip
    assert load_settings(config).trust_forwarded_proto is True

    def sign_in(url: str, proto: str) -> SimpleCookie:
        ask = urllib.request.Request(f"{url}/ui/login", headers={"X-Forwarded-Proto": proto})
        with urllib.request.urlopen(ask, timeout=10) as resp:
            form = resp.read().decode()
            nonce = SimpleCookie(resp.headers["Set-Cookie"])["notestore_login"].value
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
        data = urllib.parse.urlencode({"token": "ops-token", "csrf": csrf, "next": "/ui/"})
        post = urllib.request.Request(f"{url}/ui/login", data=data.encode(), headers={
            "X-Forwarded-Proto": proto, "Cookie": f"notestore_login={nonce}"})  # fmt: skip

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
                return None

        try:
            urllib.request.build_opener(NoRedirect).open(post, timeout=10)
        except urllib.error.HTTPError as answer:  # the 303, not followed
            assert answer.code == 303
            found: SimpleCookie = SimpleCookie()
            for header in answer.headers.get_all("Set-Cookie"):
                found.load(header)
            return found
        raise AssertionError("the sign-in did not answer 303")

    with Server(config) as server:
        assert sign_in(server.url, "https")["notestore_session"]["secure"]
        assert not sign_in(server.url, "http")["notestore_session"]["secure"]


async def test_every_503_page_says_when_to_come_back(aiohttp_client, settings):
    """A view not built yet is a 503 HTML page with Retry-After, as the API's 503 is (here the
    notes and search views never are: the app folds only comments and mentions)."""
    client = await aiohttp_client(create_app(settings, [CommentsProjector(), MentionsProjector()]))
    await signed_in(client, "ops-token")
    for path in ("/ui/", "/ui/?related=deal-1", "/ui/notes/n-1", "/ui/search?q=words"):
        resp = await client.get(path)
        assert resp.status == 503, path
        assert resp.content_type == "text/html" and "is being built" in await resp.text(), path
        assert resp.headers["Retry-After"].isdigit() and int(resp.headers["Retry-After"]) >= 1
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    api = await client.get("/notes/n-1", headers={"Authorization": "Bearer ops-token"})
    assert api.status == 503 and api.headers["Retry-After"] == resp.headers["Retry-After"]
    # a page whose views are built answers without it
    await wait_for(lambda: client.app[RUNNER].is_ready("mentions"), what="mentions built")
    resp = await client.get("/ui/accounts/acc-1/mentions")
    assert resp.status == 200 and "Retry-After" not in resp.headers


def _received_at(storage: Storage, at: float, block: dict) -> None:  # type: ignore[type-arg]
    """Append one signed delivery to the log as if it had been received at `at`."""
    raw = json.dumps(make_body(block)).encode()
    delivery = Delivery(at, APP_A, fingerprint(secret_for(APP_A)), signature(raw), raw,
                        read_body(raw, APP_A, at))  # fmt: skip
    store = storage.log_store()
    try:
        store.append([delivery])
    finally:
        store.close()


def _bars(page: str) -> dict[str, int]:
    return {day: int(n) for day, n in re.findall(r"<title>(\d{4}-\d\d-\d\d) UTC: (\d+)</title>",
                                                  page)}  # fmt: skip


async def test_an_event_just_before_and_just_after_utc_midnight_lands_on_its_utc_day(
    client, settings, monkeypatch
):
    """The chart's days run from UTC midnight to UTC midnight, whatever the server's zone
    (here UTC+7, where both events fall on one local day): one event a second before
    yesterday's UTC midnight, one a second after, one a second before today's."""
    monkeypatch.setenv("TZ", "Asia/Ho_Chi_Minh")
    time.tzset()
    try:
        midnight = today_start(time.time()) - DAY  # yesterday's start: both sides are past
        for at in (midnight - 1, midnight + 1, midnight + DAY - 1):
            _received_at(settings.storage, at, make_block())
        await signed_in(client, "ops-token")
        page = await (await client.get("/ui/status")).text()
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    day = lambda epoch: datetime.datetime.fromtimestamp(epoch, datetime.UTC).date().isoformat()  # noqa: E731
    bars = _bars(page)
    assert len(bars) == 30 and sum(bars.values()) == 3
    assert (bars[day(midnight - 1)], bars[day(midnight + 1)]) == (1, 2), bars
    assert "UTC days" in page and '<th scope="col">Day (UTC)</th>' in page


@pytest.mark.backends("sqlite")
def test_today_starts_at_utc_midnight_in_any_zone_and_the_bars_are_named_by_utc_day(monkeypatch):
    midnight = datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC).timestamp()
    monkeypatch.setenv("TZ", "America/Los_Angeles")  # UTC-8: still Feb 28 there
    time.tzset()
    try:
        assert today_start(midnight - 0.001) == midnight - DAY
        assert today_start(midnight) == today_start(midnight + DAY - 0.001) == midnight
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    drawn = chart.bars([1, 0, 2], midnight)
    assert [(bar.day, bar.count) for bar in drawn["bars"]] == [  # type: ignore[attr-defined]
        ("2026-02-27", 1), ("2026-02-28", 0), ("2026-03-01", 2)]  # fmt: skip


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(
    ("before", "after"),
    [("a" * 300, "a" * 301), ("a" * 301, "a" * 300), ("ab" * 150, "ab" * 150 + "b"),
     ("x" + "ab" * 150, "y" + "ab" * 150), ("ab" * 150 + "x", "ab" * 150 + "y"),
     ("a" * 150 + "b" * 150, "a" * 149 + "b" * 151), ("é" * 200 + "x" * 100, "é" * 201 + "x" * 99),
     ("a" * 300, "b" * 300), ("a" * 300, "")],
)  # fmt: skip
def test_the_shared_start_and_end_of_a_long_text_are_found_as_character_by_character(before, after):
    """around_the_change finds what two texts share by bisection; a character loop is the
    reference (the shared end never overlaps the shared start)."""
    shortest = min(len(before), len(after))
    prefix = next((i for i in range(shortest) if before[i] != after[i]), shortest)
    suffix = 0
    while suffix < shortest - prefix and before[-1 - suffix] == after[-1 - suffix]:
        suffix += 1
    start, keep_end = max(0, prefix - 60), max(0, suffix - 60)

    def cut(text: str) -> str:
        end = len(text) - keep_end
        return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")

    assert around_the_change(before, after) == (cut(before), cut(after))


async def test_a_note_is_opened_by_its_id_from_the_home_page(client, settings):
    """Even one the home page does not list: a note known only from its comments (as the note
    of Mobio's comment samples, whose story is the quick start's)."""
    comment = make_block("note_comment_create", event_detail=[
        {"field_key": "object_id", "add": ["n-only-comments"]},
        {"field_key": "description", "add": ["said about it"]}])  # fmt: skip
    await signed_post(client, make_body(comment))
    await settled(settings, views_named=EVERY_VIEW)
    await signed_in(client, "merchant-token")
    home = await (await client.get("/ui/")).text()
    assert 'action="/ui/note"' in home and "n-only-comments" not in home
    resp = await client.get("/ui/note?id=+n-only-comments+", allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, "/ui/notes/n-only-comments")
    page = await client.get(resp.headers["Location"])
    assert page.status == 200 and "said about it" in await page.text()
    assert (await client.get("/ui/note?id=a%2Fb", allow_redirects=False)).headers[
        "Location"
    ] == "/ui/notes/a%2Fb"
    for bad in ("", "id=", "id=%20", "id=a%00b"):
        assert (await client.get(f"/ui/note?{bad}")).status == 400, bad


@pytest.mark.backends("sqlite")
def test_the_times_a_diff_changes_read_as_times():
    """*_time fields hold epoch seconds: shown as <time> (UTC without JavaScript), not numbers;
    other fields, and what is not a time, as they are."""
    story = {"events": [{
        "event_type": "note_update_data", "action_time": 1669108532.8, "received_at": 1669108533.0,
        "actor": "u", "changes": [
            {"field_key": "updated_time", "change": [{"from": 1669106044.477118, "to": 1669108532.829107}]},
            {"field_key": "created_time", "add": ["2022-11-23T10:47Z"]},
            {"field_key": "deleted_time", "add": [True, 1e300]},
            {"field_key": "description", "change": [{"from": 1669106044, "to": "x"}]}]}]}  # fmt: skip
    (event,) = timeline(story)
    updated, created, deleted, description = event["diff"]
    assert updated.changed == [(
        '<time datetime="2022-11-22T08:34:04.477Z">2022-11-22 08:34:04 UTC</time>',
        '<time datetime="2022-11-22T09:15:32.829Z">2022-11-22 09:15:32 UTC</time>')]  # fmt: skip
    assert (created.added, deleted.added) == (["2022-11-23T10:47Z"], [True, 1e300])
    assert description.changed == [(1669106044, "x")]


@pytest.mark.backends("sqlite")
async def test_the_pages_icon_is_served_without_a_session(client):
    """Linked by every page (the sign-in form included): else browsers ask for /favicon.ico."""
    assert 'rel="icon" href="/ui/favicon.svg"' in await (await client.get("/ui/login")).text()
    resp = await client.get("/ui/favicon.svg", allow_redirects=False)
    assert (resp.status, resp.content_type) == (200, "image/svg+xml")
    assert (await resp.read()).startswith(b"<svg")
    assert "no-store" not in resp.headers["Cache-Control"]
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]


@pytest.mark.backends("sqlite")
def test_a_note_page_leaves_no_reference_cycle_behind():
    """A macro defined in a page holds the page's context, and with it the whole timeline, in
    a reference cycle that only the cyclic garbage collector frees: ~70 ms for a 500-event
    page, the p99 of scripts/bench_ui.py. The pages' macros live in macros.html instead."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("app.ui", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)  # fmt: skip
    render.install_filters(env)
    events = [{"event_type": "note_update_data", "action_time": 1669200000.0 + i,
               "received_at": 1669300000.0, "actor": "u", "seq": i, "entity": "note",
               "entity_id": "n", "changes": [{"field_key": "description",
                                              "change": [{"from": f"a{i}", "to": f"b{i}"}]}]}
              for i in range(50)]  # fmt: skip
    note = {"type": "CALL", "result": None, "description": "<p>x</p>", "object_id": None,
            "related_to": None, "mentions": [], "account_mentions": [], "attachment_ids": [],
            "created_time": 1.0, "created_by": "u", "updated_time": None, "updated_by": None,
            "deleted": False, "deleted_time": None, "event_count": 50, "last_action_time": 2.0}  # fmt: skip
    comments = [{"description": "c", "created_by": "u", "created_time": 1.0, "deleted": deleted,
                 "deleted_time": 2.0} for deleted in (False, True)]  # fmt: skip
    context = {"note_id": "n", "note": note, "merchant": "m", "at": 1.5, "then": note,
               "timeline": timeline({"events": events}), "comments": comments,
               "note_url": "/ui/notes/n", "csrf": "x", "signed_in": True, "everything": True,
               "path": "/ui/notes/n"}  # fmt: skip
    template = env.get_template("note.html")
    assert "b49" in template.render(context)  # compiled, imported, warm
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        gc.collect()
        template.render(context)
        assert gc.collect() == 0
    finally:
        if was_enabled:
            gc.enable()


@pytest.mark.backends("postgresql")
async def test_the_status_page_is_a_503_while_the_database_refuses_connections(
    client, settings, pg_database
):
    """The status page opens connections of its own: with the database refusing new ones (as
    while PostgreSQL restarts), a 503 page with Retry-After, not a 500; then the page again."""
    await signed_in(client, "ops-token")
    assert (await client.get("/ui/status")).status == 200
    name = sql.Identifier(pg_database.name)
    with psycopg.connect(pg_database.server.admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(name))
        try:
            resp = await client.get("/ui/status")
            assert resp.status == 503 and resp.content_type == "text/html"
            assert resp.headers["Retry-After"].isdigit()
            assert "cannot be read right now" in await resp.text()
        finally:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(name))
    assert (await client.get("/ui/status")).status == 200
