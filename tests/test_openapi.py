"""/openapi.json is a valid OpenAPI document, lists every route, and every answer matches it."""

from __future__ import annotations

import json

import jsonschema
import pytest
from openapi_spec_validator import validate

from app.openapi import document
from app.signing import SIGNATURE_HEADER
from tests.helpers import make_block, make_body, post_samples, settled, signature, signed_post

OPS = {"Authorization": "Bearer ops-token"}
NOTE = "637dfa373e395b0cead72666"
THREADED = "63843fceb0d322e9a7678bec"

# (template, concrete path, headers); every documented GET route, its answers and its errors
CALLS = [
    ("/webhooks/mobio", "/webhooks/mobio", {}),
    ("/healthz", "/healthz", {}),
    ("/openapi.json", "/openapi.json", {}),
    ("/notes", "/notes?related_to=635b528eb3528d2e7a0477ba", OPS),
    ("/notes", "/notes?related_to=acc&limit=1", OPS),
    ("/notes", "/notes", OPS),
    ("/notes/{note_id}", f"/notes/{NOTE}", OPS),
    ("/notes/{note_id}", f"/notes/{NOTE}?as_of=1669200439.676389", OPS),
    ("/notes/{note_id}", "/notes/unknown", OPS),
    ("/notes/{note_id}", f"/notes/{NOTE}", {}),
    ("/notes/{note_id}", f"/notes/{NOTE}?as_of=later", OPS),
    ("/notes/{note_id}/history", f"/notes/{THREADED}/history", OPS),
    ("/notes/{note_id}/history", "/notes/unknown/history", OPS),
    ("/notes/{note_id}/comments", f"/notes/{THREADED}/comments?include_deleted=true", OPS),
    ("/notes/{note_id}/comments", f"/notes/{THREADED}/comments?include_deleted=1", OPS),
    ("/events", "/events?limit=2", OPS),
    ("/events", "/events?after=5", OPS),
    ("/accounts/{account_id}/mentions", "/accounts/acc-1/mentions?limit=1", OPS),
    ("/accounts/{account_id}/mentions", "/accounts/acc-1/mentions?cursor=zz", OPS),
]


def check(doc, template: str, method: str, status: int, body) -> None:  # type: ignore[no-untyped-def]
    responses = doc["paths"][template][method]["responses"]
    assert str(status) in responses, f"{method} {template} answered an undocumented {status}"
    content = responses[str(status)].get("content", {}).get("application/json")
    if content is not None:
        schema = {**content["schema"], "components": doc["components"]}
        jsonschema.Draft202012Validator(schema).validate(body)


def test_the_document_is_valid_openapi():
    validate(document())


async def test_every_route_is_documented(client):
    doc = document()
    served = {
        (r.method.lower(), r.resource.canonical)
        for r in client.app.router.routes()
        if r.method != "HEAD"
    }
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
    await settled(settings)
    resp = await client.get(path, headers=headers)
    body = await resp.json() if resp.content_type == "application/json" else await resp.text()
    check(document(), template, "get", resp.status, body)


async def test_webhook_answers_match_the_document(client):
    doc = document()
    raw = json.dumps(make_body()).encode()
    for headers, data in [
        ({SIGNATURE_HEADER: signature(raw)}, raw),
        ({}, raw),
        ({}, b"x" * 70_000),
    ]:
        resp = await client.post("/webhooks/mobio", data=data, headers=headers)
        check(doc, "/webhooks/mobio", "post", resp.status, await resp.json())


async def test_the_served_document_is_the_document(client):
    assert await (await client.get("/openapi.json")).json() == document()
