"""What the inspector's tests share: a story of notes in two merchants, and Debian's Chromium.

`story_bodies()` are signed-ready bodies: merchant A's note n-story (created, then its
description changed, two comments of which one deleted), 30 notes of A mentioning acc-feed,
a note whose description is hostile HTML, merchant B's note n-other (mentioning acc-feed
too and related to the same deal), and one block quarantined for an implausible time.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from app.signing import SIGNATURE_HEADER
from tests.helpers import MERCHANT, make_block, make_body, signature

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
OTHER = "other-merchant-b"
DEAL = "deal-shared"
RELATED = {"deal_ids": [DEAL], "profile_ids": [], "company_ids": [], "ticket_ids": []}
CREATED, UPDATED = 1669200000.0, 1669300000.0  # 2022-11-23T10:40:00Z, 2022-11-24T14:26:40Z
OLD, NEW = "<p>Old words of the story</p>", "<p>New words of the story</p>"
HOSTILE = (
    '<p>hostile</p><script>window.pwned = "script"; alert(1)</script>'
    '<img src="x" onerror="window.pwned = \'onerror\'; alert(2)">'
    '<a id="jslink" href="javascript:window.pwned=\'link\';alert(3)">click me</a>'
    '<svg onload="window.pwned=\'svg\'"></svg><iframe src="javascript:alert(4)"></iframe>'
)
FEED_NOTES = 30
SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "ui-screenshots"


def chromium_or_skip() -> None:
    """Locally, no Chromium (or no playwright) skips with a message; with CI=true it fails."""
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "playwright is not installed (pip install -e '.[dev]')"
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"the inspector's browser tests need Chromium: {problem}")
    pytest.skip(f"the inspector's browser tests are skipped: {problem}")


def _field(key: str, **diff: Any) -> dict[str, Any]:
    return {"field_key": key, "add": [], "change": [], "remove": [], **diff}


def _note(note_id: str, at: float, merchant: str = MERCHANT, **fields: Any) -> dict[str, Any]:
    detail = [_field(k, add=[v]) for k, v in fields.items()]
    return make_block(note_id=note_id, action_time=at, merchant_id=merchant, event_detail=detail)


def story_blocks() -> list[dict[str, Any]]:
    """Merchant A's blocks (see the module's docstring)."""
    story = [
        _note("n-story", CREATED, description=OLD, information={"type": "CALL", "result": "ok"},
              created_by="user-creator", related_to=RELATED),
        make_block("note_update_data", note_id="n-story", action_time=UPDATED, event_detail=[
            _field("description", change=[{"from": OLD, "to": NEW}]),
            _field("updated_by", add=["user-editor"]),
            _field("updated_time", change=[{"from": CREATED, "to": UPDATED}]),
            _field("attachment_ids", add=[["file-1"]]),
        ]),
    ]  # fmt: skip
    for n, (comment, text) in enumerate(
        [("c-live", "a live comment"), ("c-gone", "a comment later deleted")]
    ):
        story.append(make_block("note_comment_create", comment_id=comment, action_time=CREATED + 10 + n,
                                event_detail=[_field("object_id", add=["n-story"]),
                                              _field("description", add=[text]),
                                              _field("created_by", add=["user-commenter"])]))  # fmt: skip
    story.append(make_block("note_comment_delete", comment_id="c-gone", action_time=CREATED + 60,
                            event_detail=[_field("object_id", remove=["n-story"]),
                                          _field("description", remove=["a comment later deleted"])]))  # fmt: skip
    story += [
        _note(f"n-feed-{i:02d}", CREATED + 100 + i, description=f"feed note {i}",
              account_mentions=["acc-feed"])
        for i in range(FEED_NOTES)
    ]  # fmt: skip
    story.append(_note("n-xss", CREATED + 200, description=HOSTILE))
    return story


def other_blocks() -> list[dict[str, Any]]:
    """Merchant B's note: mentions acc-feed and relates to the same deal as n-story."""
    return [_note("n-other", CREATED + 300, merchant=OTHER, description="<p>SECRET-OF-B</p>",
                  account_mentions=["acc-feed"], related_to=RELATED)]  # fmt: skip


def quarantined_block() -> dict[str, Any]:
    return _note("n-too-old", 100.0, description="sent with an implausible time")


def bodies() -> list[dict[str, Any]]:
    other = make_body(*other_blocks())
    other["merchant_id"] = OTHER
    return [make_body(*story_blocks()), other, make_body(quarantined_block())]


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    raw = json.dumps(body).encode()
    request = urllib.request.Request(
        f"{url}/webhooks/mobio", data=raw, headers={SIGNATURE_HEADER: signature(raw)}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
        return answer


def get_json(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())
