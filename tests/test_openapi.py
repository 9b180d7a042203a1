"""/openapi.json is a valid OpenAPI document, lists every route, every answer matches it
(status, content type, headers, body), and its parameter bounds are the server's own."""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any
from urllib.parse import quote

import jsonschema
import pytest
from openapi_spec_validator import validate

from app.openapi import document
from app.signing import SIGNATURE_HEADER
from eventlog.spool import SPOOL_FILE
from tests.helpers import (
    MERCHANT,
    make_block,
    make_body,
    post_samples,
    settled,
    signature,
    signed_post,
)

OPS = {"Authorization": "Bearer ops-token"}
NOTE = "637dfa373e395b0cead72666"
THREADED = "63843fceb0d322e9a7678bec"
OTHER_MERCHANT = "m-other"

# (template, concrete path, headers); every documented GET route, its answers and its errors
CALLS = [
    ("/webhooks/mobio", "/webhooks/mobio", {}),
    ("/healthz", "/healthz", {}),
    ("/metrics", "/metrics", {}),
    ("/openapi.json", "/openapi.json", {}),
    ("/notes", "/notes?related_to=635b528eb3528d2e7a0477ba", OPS),
    ("/notes", "/notes?related_to=acc&limit=1", OPS),
    ("/notes", "/notes", OPS),
    ("/notes", "/notes?related_to=x&limit=0", OPS),
    ("/notes", "/notes", {}),
    ("/notes/{note_id}", f"/notes/{NOTE}", OPS),
    ("/notes/{note_id}", f"/notes/{NOTE}?merchant_id={MERCHANT}", OPS),
    ("/notes/{note_id}", f"/notes/{NOTE}?as_of=1669200439.676389", OPS),
    ("/notes/{note_id}", "/notes/unknown", OPS),
    ("/notes/{note_id}", f"/notes/{NOTE}", {}),
    ("/notes/{note_id}", f"/notes/{NOTE}?as_of=later", OPS),
    ("/notes/{note_id}", f"/notes/{NOTE}?as_of=", OPS),
    ("/notes/{note_id}", "/notes/shared", OPS),
    ("/notes/{note_id}", "/notes/shared?as_of=2030-01-01T00:00Z", OPS),
    ("/notes/{note_id}", f"/notes/shared?merchant_id={OTHER_MERCHANT}", OPS),
    ("/notes/{note_id}/history", f"/notes/{THREADED}/history", OPS),
    ("/notes/{note_id}/history", "/notes/unknown/history", OPS),
    ("/notes/{note_id}/history", "/notes/shared/history", OPS),
    ("/notes/{note_id}/comments", f"/notes/{THREADED}/comments?include_deleted=true", OPS),
    ("/notes/{note_id}/comments", f"/notes/{THREADED}/comments?include_deleted=1", OPS),
    ("/notes/{note_id}/comments", "/notes/shared/comments", OPS),
    ("/events", "/events?limit=2", OPS),
    ("/events", "/events?after=5", OPS),
    ("/events", "/events?after=" + "9" * 19, OPS),
    ("/accounts/{account_id}/mentions", "/accounts/acc-1/mentions?limit=1", OPS),
    ("/accounts/{account_id}/mentions", "/accounts/acc-1/mentions?cursor=zz", OPS),
]


def media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def check(doc, template: str, method: str, resp, body) -> None:  # type: ignore[no-untyped-def]
    """The answer's status, content type, headers and body are as documented."""
    responses = doc["paths"][template][method]["responses"]
    status = str(resp.status)
    assert status in responses, f"{method} {template} answered an undocumented {status}"
    documented = responses[status]
    for name, header in documented.get("headers", {}).items():
        value = resp.headers.get(name)
        assert value is not None or not header["required"], f"{status} without {name}"
        if value is not None:
            assert header["schema"]["type"] == "integer" and value.isdigit(), (name, value)
            jsonschema.validate(int(value), header["schema"])
    content = documented.get("content")
    if content is None:
        return
    kind = media_type(resp.headers["Content-Type"])
    assert kind in content, f"{method} {template} {status} answered {kind}, not {list(content)}"
    schema = {**content[kind]["schema"], "components": doc["components"]}
    jsonschema.Draft202012Validator(schema).validate(body)


async def read(resp) -> Any:  # type: ignore[no-untyped-def]
    if resp.content_type == "application/json":
        return await resp.json()
    return await resp.text()


async def note_held_by_two_merchants(client) -> None:  # type: ignore[no-untyped-def]
    """Note `shared` (and a comment on it) under MERCHANT and under OTHER_MERCHANT."""
    for merchant in (MERCHANT, OTHER_MERCHANT):
        body = make_body(
            make_block(note_id="shared", merchant_id=merchant),
            make_block(
                "comment_create", comment_id=f"c-{merchant}", merchant_id=merchant,
                event_detail=[{"field_key": "object_id", "add": ["shared"]}],
            ),
        )  # fmt: skip
        body["merchant_id"] = merchant
        status, answer = await signed_post(client, body)
        assert (status, answer["accepted"]) == (200, 2), answer


def test_the_document_is_valid_openapi():
    validate(document())


async def test_every_route_is_documented(client):
    doc = document()
    served = {
        (r.method.lower(), r.resource.canonical)
        for r in client.app.router.routes()
        if r.method != "HEAD" and not r.resource.canonical.startswith("/ui/")
    }  # the inspector's HTML pages (/ui/, app/ui) are not part of the JSON API
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert served == documented


@pytest.mark.parametrize(("template", "path", "headers"), CALLS, ids=[c[1] for c in CALLS])
async def test_answers_match_the_document(client, settings, template, path, headers):
    await post_samples(client)
    mention = make_block(
        note_id="n-m", event_detail=[{"field_key": "account_mentions", "add": [["acc-1"]]}]
    )
    await signed_post(client, make_body(mention, make_block(note_id="n-2", event_detail=[
        {"field_key": "account_mentions", "add": [["acc-1"]]}])))  # fmt: skip
    await note_held_by_two_merchants(client)
    await settled(settings)
    resp = await client.get(path, headers=headers)
    check(document(), template, "get", resp, await read(resp))


async def test_an_id_held_by_two_merchants_is_the_documented_409(client, settings):
    await note_held_by_two_merchants(client)
    await settled(settings)
    for path in ("/notes/shared", "/notes/shared/history", "/notes/shared/comments"):
        resp = await client.get(path, headers=OPS)
        body = await resp.json()
        assert resp.status == 409 and sorted(body["merchants"]) == [MERCHANT, OTHER_MERCHANT]
        check(document(), path.replace("shared", "{note_id}"), "get", resp, body)


async def test_webhook_answers_match_the_document(client):
    doc = document()
    raw = json.dumps(make_body()).encode()
    for headers, data in [
        ({SIGNATURE_HEADER: signature(raw)}, raw),
        ({SIGNATURE_HEADER: signature(b"\x00\xff")}, b"\x00\xff"),  # any bytes, signed: 200
        ({}, raw),
        ({SIGNATURE_HEADER: "0" * 64}, raw),
        ({}, b"x" * 70_000),
    ]:
        resp = await client.post("/webhooks/mobio", data=data, headers=headers)
        check(doc, "/webhooks/mobio", "post", resp, await resp.json())


async def test_the_503s_carry_retry_after_as_documented(client, settings):
    """A log that cannot commit (a trigger refusing inserts, as a full disk would): the
    delivery is spooled (200, documented); once the spool refuses too, 503s."""
    await signed_post(client, make_body())  # the log exists
    conn = sqlite3.connect(settings.events_path, isolation_level=None)
    conn.execute(
        "CREATE TRIGGER full_disk BEFORE INSERT ON requests BEGIN SELECT RAISE(ABORT, 'full'); END"
    )
    spool = sqlite3.connect(settings.spool_path / SPOOL_FILE, isolation_level=None)
    try:
        raw = json.dumps(make_body()).encode()
        resp = await client.post(
            "/webhooks/mobio", data=raw, headers={SIGNATURE_HEADER: signature(raw)}
        )
        assert resp.status == 200 and (await resp.json())["spooled"] is True
        check(document(), "/webhooks/mobio", "post", resp, await resp.json())
        resp = await client.get("/healthz")  # degraded: the spool holds a delivery
        assert resp.status == 200 and (await resp.json())["status"] == "degraded"
        check(document(), "/healthz", "get", resp, await resp.json())
        spool.execute(
            "CREATE TRIGGER full_disk BEFORE INSERT ON spooled BEGIN SELECT RAISE(ABORT, 'full'); END"
        )
        raw = json.dumps(make_body()).encode()
        resp = await client.post(
            "/webhooks/mobio", data=raw, headers={SIGNATURE_HEADER: signature(raw)}
        )
        assert resp.status == 503
        check(document(), "/webhooks/mobio", "post", resp, await resp.json())
        resp = await client.get("/healthz")
        assert resp.status == 503
        check(document(), "/healthz", "get", resp, await resp.json())
    finally:
        conn.execute("DROP TRIGGER full_disk")
        conn.close()
        spool.execute("DROP TRIGGER IF EXISTS full_disk")
        spool.close()


def test_the_webhook_is_documented_as_signed_bytes():
    doc = document()
    post = doc["paths"]["/webhooks/mobio"]["post"]
    scheme = doc["components"]["securitySchemes"][post["security"][0].popitem()[0]]
    assert scheme == {**scheme, "type": "apiKey", "in": "header", "name": SIGNATURE_HEADER}
    content = post["requestBody"]["content"]
    assert content["application/octet-stream"]["schema"] == {"type": "string", "format": "binary"}
    assert content["application/json"]["schema"] == {}
    assert post["requestBody"]["required"] is False
    assert set(post["responses"]) == {"200", "401", "413", "503"}


# Bounds: each documented parameter, values on both sides of each of its bounds. The
# server answers 400 exactly when the document says the value is not allowed.
LONG = "x" * 128
AS_OF = ["", "1669200439", "-1.5", "1.", "1e5", "2022-11-23T10:47Z", "2022-11-23t10:47:59.5+07:00"]
AS_OF += ["2022-11-23T10:47:60", "2022-13-01T00:00", "2022-11-23", "2022-11-23T24:00", "later"]
IDS = ["x", LONG, LONG + "x"]
BOUNDS: list[tuple[str, str, str, list[str | None]]] = [
    # (template, the path with {} for the value, parameter, values; None: left out)
    ("/notes", "/notes?{}", "related_to", [None, "", *IDS]),
    ("/notes", "/notes?related_to=r&{}", "limit", [None, "0", "1", "500", "501", "-1", "x", ""]),
    ("/notes/{note_id}", "/notes/{}", "note_id", IDS),
    ("/notes/{note_id}", "/notes/n?{}", "as_of", [None, *AS_OF]),
    ("/notes/{note_id}", "/notes/n?{}", "merchant_id", [None, "", *IDS]),
    ("/notes/{note_id}/history", "/notes/{}/history", "note_id", IDS),
    ("/notes/{note_id}/history", "/notes/n/history?{}", "merchant_id", ["", *IDS]),
    ("/notes/{note_id}/comments", "/notes/{}/comments", "note_id", IDS),
    ("/notes/{note_id}/comments", "/notes/n/comments?{}", "include_deleted", [None, "true", "false", "1", "", "True"]),
    ("/notes/{note_id}/comments", "/notes/n/comments?{}", "merchant_id", ["", *IDS]),
    ("/events", "/events?{}", "after", [None, "0", "9" * 18, "9" * 19, "-1", "x", ""]),
    ("/events", "/events?{}", "limit", [None, "0", "1", "1000", "1001", "x"]),
    ("/accounts/{account_id}/mentions", "/accounts/{}/mentions", "account_id", IDS),
    ("/accounts/{account_id}/mentions", "/accounts/a/mentions?{}", "limit", [None, "0", "1", "500", "501"]),
]  # fmt: skip
CASES = [(t, p, n, v) for t, p, n, values in BOUNDS for v in values]


def documented_as_valid(template: str, name: str, value: str | None) -> bool:
    """Whether the document allows this wire value of the parameter."""
    (param,) = [p for p in document()["paths"][template]["get"]["parameters"] if p["name"] == name]
    if value is None:
        return not param["required"]
    schema = param["schema"]
    if schema.get("type") == "integer":  # on the wire: a decimal integer
        if not re.fullmatch(r"-?[0-9]+", value):
            return False
        return jsonschema.Draft202012Validator(schema).is_valid(int(value))
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).is_valid(value)


@pytest.mark.parametrize(
    ("template", "path", "name", "value"), CASES, ids=[f"{c[2]}={c[3]!r}"[:40] for c in CASES]
)
async def test_the_document_bounds_each_parameter_as_the_server_does(
    client, template, path, name, value
):
    where = next(
        p["in"] for p in document()["paths"][template]["get"]["parameters"] if p["name"] == name
    )
    if where == "path":
        assert value is not None
        url = path.format(quote(value, safe=""))
    else:
        url = path.format("" if value is None else f"{name}={quote(value, safe='')}").rstrip("?&")
    resp = await client.get(url, headers=OPS)
    body = await resp.json()
    assert (resp.status != 400) == documented_as_valid(template, name, value), (resp.status, body)
    if resp.status == 400:
        assert name in body["error"]


async def test_the_served_document_is_the_document(client):
    assert await (await client.get("/openapi.json")).json() == document()
