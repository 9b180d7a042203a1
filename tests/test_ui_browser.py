"""The inspector in a real browser (Playwright driving Debian's Chromium) against a real
`notestore serve` on 127.0.0.1: sign-in, a note's story, as-of, threads, feeds, quarantine,
merchant scopes, hostile HTML, CSRF, sessions, and both screen widths."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.ui.session import token_fingerprint
from tests.helpers import MERCHANT, SECRETS, wait_until
from tests.server import Server, write_config
from tests.ui_kit import (
    CHROMIUM,
    FEED_NOTES,
    LAUNCH_ARGS,
    OTHER,
    SCREENSHOTS,
    bodies,
    chromium_or_skip,
    get_json,
    post,
)

OPS, ONLY_A = "ops-token-for-the-ui", "merchant-a-token-for-the-ui"
SESSION_SECRET = "a-session-secret-for-the-browser-tests"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield launched
        launched.close()


def _settled(url: str) -> bool:
    try:
        feed = get_json(f"{url}/accounts/acc-feed/mentions?limit=500", OPS)
        story = get_json(f"{url}/notes/n-story/history", OPS)
        get_json(f"{url}/notes/n-xss", OPS)
        found = get_json(f"{url}/search?q=story", OPS)
    except urllib.error.HTTPError:
        return False
    settled = len(feed["items"]) == FEED_NOTES + 1 and len(story["events"]) == 5
    return settled and [item["note_id"] for item in found["items"]] == ["n-story"]


@pytest.fixture(scope="module")
def served(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("ui")
    tokens = {OPS: ["*"], ONLY_A: [MERCHANT]}
    config = write_config(folder, SECRETS, tokens, session_secret=SESSION_SECRET)
    with Server(config) as server:
        answers = [post(server.url, body) for body in bodies()]
        assert [a["quarantined"] for a in answers] == [0, 0, 1], answers
        wait_until(lambda: _settled(server.url), 30, "views caught up with the story")
        yield server


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(
        timezone_id="Asia/Ho_Chi_Minh", viewport={"width": 1280, "height": 900}
    )
    opened = context.new_page()
    opened.set_default_timeout(10_000)
    yield opened
    context.close()


def sign_in(page: Any, server: Server, token: str, path: str = "/ui/") -> None:
    page.goto(server.url + path)
    assert page.url.startswith(f"{server.url}/ui/login"), page.url
    page.get_by_label("Query token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def test_a_reader_signs_in_follows_a_notes_story_back_in_time_and_signs_out(page, served):
    """Sign in lands back on the note asked for; the update's diff, the note before it, the
    deleted comment behind its toggle; signing out ends the session."""
    sign_in(page, served, OPS, "/ui/notes/n-story")
    assert page.url == f"{served.url}/ui/notes/n-story"
    now = page.locator("section[aria-labelledby=now-title]")
    assert "New words of the story" in now.inner_text()
    update = page.locator("li.event", has_text="note_update_data")
    change = update.locator("tr", has_text="description").locator(".changed")
    assert change.locator(".from").inner_text() == "<p>Old words of the story</p>"
    assert change.locator(".to").inner_text() == "<p>New words of the story</p>"
    assert "user-editor" in update.locator(".head").inner_text()
    assert (
        update.locator("tr", has_text="attachment_ids").locator(".added").inner_text() == "+ file-1"
    )
    # the timeline is newest first: the update comes before the create
    kinds = page.locator("li.event .head strong").all_inner_texts()
    assert kinds.index("note_update_data") < kinds.index("note_create")

    page.locator("li.event", has_text="note_create").get_by_role(
        "link", name="The note as it was then"
    ).click()
    then = page.locator("section.then")
    assert "Old words of the story" in then.inner_text()
    assert "New words of the story" not in then.inner_text()

    comments = page.locator("section[aria-labelledby=comments-title]")
    deleted = comments.get_by_text("a comment later deleted")
    assert comments.get_by_text("a live comment").is_visible() and not deleted.is_visible()
    page.get_by_text("Show 1 deleted comment").click()
    assert deleted.is_visible()

    page.goto(f"{served.url}/ui/")
    page.get_by_label("Search notes").fill("STÓRY new")  # folded as the search view folds
    page.get_by_role("button", name="Search").click()
    results = page.locator("ol.results > li")
    assert results.count() == 1 and results.locator("mark").all_inner_texts() == ["New", "story"]
    results.get_by_role("link", name="n-story").click()
    assert page.url == f"{served.url}/ui/notes/n-story?merchant_id={MERCHANT}"

    page.get_by_role("button", name="Sign out").click()
    assert page.url.startswith(f"{served.url}/ui/login")
    page.goto(f"{served.url}/ui/notes/n-story")
    assert page.url.startswith(f"{served.url}/ui/login")


def test_a_note_is_opened_by_its_id_and_its_diff_shows_times_as_times(page, served):
    """The home page's "open a note by its id" (a newcomer holding an id from the README or
    from Mobio); a *_time field's change shows as a time in the viewer's zone, not a number."""
    sign_in(page, served, ONLY_A)
    page.get_by_label("Open a note by its id").fill("n-story")
    page.get_by_role("button", name="Open note").click()
    assert page.url == f"{served.url}/ui/notes/n-story"
    update = page.locator("li.event", has_text="note_update_data")
    before, after = update.locator("tr", has_text="updated_time").locator("time").all()
    assert before.get_attribute("datetime") == "2022-11-23T10:40:00.000Z"
    assert after.get_attribute("datetime") == "2022-11-24T14:26:40.000Z"
    assert "17:40:00" in before.inner_text() and "21:26:40" in after.inner_text()  # UTC+7
    page.goto(f"{served.url}/ui/")
    page.get_by_label("Open a note by its id").fill("n-other")  # another merchant's
    page.get_by_role("button", name="Open note").click()
    assert "n-other" in page.url and "SECRET-OF-B" not in page.content()
    assert page.get_by_role("alert").count() == 1


def test_times_show_in_the_viewers_zone_and_a_chosen_local_time_shows_the_note_then(page, served):
    """static/time.js (allowed by the CSP) shows UTC times in the browser's zone (UTC+7 here),
    and the date-and-time field is read in that zone: 20:00 there is before the update."""
    sign_in(page, served, OPS, "/ui/notes/n-story")
    create = page.locator("li.event", has_text="note_create").locator("time").first
    assert create.get_attribute("datetime") == "2022-11-23T10:40:00.000Z"
    assert "17:40:00" in create.inner_text()  # 10:40 UTC in Ho Chi Minh City
    for local, words in (
        ("2022-11-24T20:00:00", "Old words"),
        ("2022-11-24T22:00:00", "New words"),
    ):
        page.get_by_label("Show the note as it was at").fill(local)
        page.get_by_role("button", name="Show", exact=True).click()
        assert words in page.locator("section.then").inner_text(), local


def test_the_mention_feed_pages_through_every_note_mentioning_the_account(page, served):
    sign_in(page, served, ONLY_A)
    page.get_by_label("Mention feed of account").fill("acc-feed")
    page.get_by_role("button", name="Open feed").click()
    assert page.url.endswith("/ui/accounts/acc-feed/mentions")
    first = page.locator("ol.notes > li").all_inner_texts()
    page.get_by_role("link", name="Older →").click()
    second = page.locator("ol.notes > li").all_inner_texts()
    assert (len(first), len(second)) == (25, FEED_NOTES - 25)
    assert page.get_by_role("link", name="Older →").count() == 0
    notes = {re.search(r"n-feed-\d+", text).group(0) for text in first + second}  # type: ignore[union-attr]
    assert notes == {f"n-feed-{i:02d}" for i in range(FEED_NOTES)}


def test_a_quarantined_item_is_replayed_from_its_page_and_shows_the_outcome(page, served):
    sign_in(page, served, OPS, "/ui/quarantine")
    item = page.locator("ol.quarantine > li").first
    assert "implausible_time" in item.inner_text()
    assert item.locator(".outcome").count() == 0
    item.get_by_text("Payload").click()
    assert '"note_id": "n-too-old"' in item.locator("pre.payload").inner_text()
    item.get_by_role("button", name=re.compile("Replay item")).click()
    shown = page.get_by_role("status")
    assert "still_failing" in shown.inner_text() and "implausible_time" in shown.inner_text()


def test_a_token_of_one_merchant_sees_nothing_of_another_on_any_page(page, served):
    sign_in(page, served, ONLY_A)
    assert page.goto(f"{served.url}/ui/notes/n-other").status == 404
    assert page.goto(f"{served.url}/ui/notes/n-other?merchant_id={OTHER}").status == 404
    as_of = page.goto(f"{served.url}/ui/notes/n-other?as_of=2030-01-01T00:00Z")
    assert as_of.status == 404
    pages = [
        "/ui/",
        "/ui/?related=deal-shared",
        "/ui/accounts/acc-feed/mentions",
        "/ui/status",
        "/ui/search?q=SECRET",
        "/ui/search?q=acc",
    ]
    shown = ""
    for path in pages:
        page.goto(served.url + path)
        shown += page.content()
        while page.get_by_role("link", name="Older →").count():
            page.get_by_role("link", name="Older →").click()
            shown += page.content()
    assert "n-other" not in shown and "SECRET-OF-B" not in shown and OTHER not in shown
    assert "n-story" in shown  # the same pages do show the token's own merchant
    assert page.goto(f"{served.url}/ui/quarantine").status == 403
    assert page.get_by_role("link", name="Quarantine").count() == 0


def test_the_other_merchants_note_is_there_for_a_token_that_reads_every_merchant(page, served):
    """The other side of the scope test: the pages above would show n-other if allowed."""
    sign_in(page, served, OPS, "/ui/?related=deal-shared")
    assert "n-other" in page.content() and "n-story" in page.content()
    assert page.goto(f"{served.url}/ui/notes/n-other").status == 200
    assert "SECRET-OF-B" in page.content()
    page.goto(f"{served.url}/ui/search?q=SECRET")
    assert page.locator("ol.results > li").all_inner_texts()[0].startswith("n-other")


def test_a_hostile_description_runs_nothing(page, served):
    """<script>, onerror=, onload= and javascript: links: no dialog, no global set, anywhere."""
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, served, OPS, "/ui/notes/n-xss")
    description = page.locator("section[aria-labelledby=now-title] .description")
    assert "hostile" in description.inner_text()
    assert description.locator("script, img, svg, iframe, [onerror], [onload]").count() == 0
    link = description.get_by_text("click me")
    assert (link.get_attribute("href") or "") == ""
    link.click()
    # the timeline shows the received HTML as text
    assert "<script>" in page.locator("li.event", has_text="note_create").inner_text()
    page.goto(f"{served.url}/ui/")
    page.wait_for_timeout(300)
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert dialogs == []


def test_a_form_posted_without_its_csrf_token_is_refused(page, served):
    sign_in(page, served, OPS)
    for path, form in (("/ui/logout", {}), ("/ui/logout", {"csrf": "forged"}),
                       ("/ui/quarantine/1/replay", {})):  # fmt: skip
        assert page.request.post(served.url + path, form=form).status == 403, path
    page.goto(
        f"{served.url}/ui/quarantine"
    )  # still signed in, nothing replayed by the refused post
    assert page.url == f"{served.url}/ui/quarantine"
    login = page.request.post(f"{served.url}/ui/login", form={"token": OPS, "next": "/ui/"})
    assert login.status == 403


def _cookie(expires: float, secret: str = SESSION_SECRET, token: str = OPS) -> str:
    raw = json.dumps({"f": token_fingerprint(token), "e": expires, "n": "nonce"})
    payload = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    mac = hmac.new(secret.encode(), f"session:{payload}".encode(), hashlib.sha256).hexdigest()
    return f"{payload}.{mac}"


@pytest.mark.parametrize(
    "cookie",
    [
        _cookie(time.time() + 3600, secret="not-the-servers-secret"),  # forged
        _cookie(time.time() - 1),  # expired
        _cookie(time.time() + 3600, token="a-token-nobody-configured"),
        "garbage",
    ],
    ids=["forged", "expired", "unknown-token", "garbage"],
)
def test_a_forged_or_expired_session_cookie_leads_to_sign_in(page, served, cookie):
    page.context.add_cookies(
        [{"name": "notestore_session", "value": cookie, "url": f"{served.url}/ui/"}]
    )
    page.goto(f"{served.url}/ui/status")
    assert page.url.startswith(f"{served.url}/ui/login?next=")


def test_a_well_made_session_cookie_is_accepted(page, served):
    """The control of the test above: the same cookie, signed right and in date, is a session."""
    page.context.add_cookies([{"name": "notestore_session", "value": _cookie(time.time() + 3600),
                               "url": f"{served.url}/ui/"}])  # fmt: skip
    page.goto(f"{served.url}/ui/status")
    assert page.url == f"{served.url}/ui/status"


@pytest.mark.parametrize(
    "wanted",
    ["https://evil.example/ui/", "//evil.example/ui/", "/notes/n-story", "/ui/../notes/n-story",
     "/ui/%2e%2e/notes/n-story", "javascript:alert(1)"],
)  # fmt: skip
def test_a_next_outside_ui_is_ignored(page, served, wanted):
    page.goto(f"{served.url}/ui/login?next={wanted}")
    page.get_by_label("Query token").fill(OPS)
    page.get_by_role("button", name="Sign in").click()
    assert page.url == f"{served.url}/ui/"


def test_pages_forbid_inline_script_and_framing_and_the_cookie_holds_no_token(page, served):
    sign_in(page, served, OPS)
    answer = page.goto(f"{served.url}/ui/notes/n-story")
    policy = answer.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "notestore_session"]
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/ui")
    assert OPS not in cookie["value"] and OPS not in base64.urlsafe_b64decode(
        cookie["value"].split(".")[0] + "==").decode()  # fmt: skip


@pytest.mark.parametrize("width", [375, 1280])
def test_the_pages_fit_a_phone_and_a_desktop(browser, served, width):
    """No page scrolls sideways; screenshots of each are saved under artifacts/ui-screenshots."""
    context = browser.new_context(viewport={"width": width, "height": 900}, timezone_id="UTC")
    try:
        shot = context.new_page()
        sign_in(shot, served, OPS)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for name, path in (("home", "/ui/"), ("note", "/ui/notes/n-story?as_of=1669200000"),
                           ("status", "/ui/status"), ("quarantine", "/ui/quarantine"),
                           ("mentions", "/ui/accounts/acc-feed/mentions")):  # fmt: skip
            shot.goto(served.url + path)
            overflow = shot.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} is {overflow}px too wide at {width}px"
            shot.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
            assert Path(SCREENSHOTS / f"{name}-{width}.png").stat().st_size > 1000
    finally:
        context.close()


@pytest.mark.parametrize(
    "query",
    ['"story" AND OR NEAR(words, 2) * ^ - : ( ) {col}: "unbalanced', "story*", "NOT story",
     "'; DROP TABLE notes; --", "story\" OR \"x"],
)  # fmt: skip
def test_a_search_full_of_search_syntax_answers_200(page, served, query):
    sign_in(page, served, OPS)
    page.get_by_label("Search notes").fill(query)
    page.get_by_role("button", name="Search").click()
    assert page.url.startswith(f"{served.url}/ui/search?q=")
    assert page.evaluate("document.title").startswith("Search")
    assert page.request.get(page.url).status == 200


def test_a_search_with_no_word_says_so(page, served):
    sign_in(page, served, OPS)
    answer = page.goto(f"{served.url}/ui/search?q=%22*%22%20()")
    assert (
        answer.status == 400 and "no word to search for" in page.get_by_role("alert").inner_text()
    )
