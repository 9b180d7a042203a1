"""The OpenAPI 3.1 document of every route, served at /openapi.json.

tests/test_openapi.py calls every route and validates each answer against it,
so this document cannot drift from what the service does.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

ANY: dict[str, Any] = {}
STR = {"type": "string"}
NUM = {"type": "number"}
INT = {"type": "integer"}
NULLABLE_STR = {"type": ["string", "null"]}
NULLABLE_NUM = {"type": ["number", "null"]}
NULLABLE_INT = {"type": ["integer", "null"]}
LIST = {"type": "array"}


def _obj(properties: dict[str, Any], extra: bool = False) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": extra,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_ENTITY_TAIL = {
    "deleted": {"type": "boolean"},
    "deleted_time": NULLABLE_NUM,
    "last_action_time": NULLABLE_NUM,
    "event_count": INT,
    "extra": {"type": "object"},
}

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": STR}),
    "DeliveryAnswer": _obj({"accepted": INT, "duplicates": INT, "quarantined": INT}),
    "Health": {
        "type": "object",
        "properties": {
            "status": {"enum": ["ok", "degraded", "unavailable"]},
            "reasons": {"type": "array", "items": STR},
            "views_catching_up": {"type": "array", "items": STR},
        },
        "required": ["status"],
    },
    "Note": _obj(
        {
            "note_id": STR,
            "merchant_id": NULLABLE_STR,
            "description": ANY,
            "information": ANY,
            "type": ANY,
            "result": ANY,
            "source": ANY,
            "object_id": ANY,
            "related_to": ANY,
            "related_to_not_delete": ANY,
            "attachment_ids": LIST,
            "mentions": LIST,
            "account_mentions": LIST,
            "created_time": NULLABLE_NUM,
            "created_by": ANY,
            "updated_by": ANY,
            "updated_time": NULLABLE_NUM,
            **_ENTITY_TAIL,
        }
    ),  # fmt: skip
    "Comment": _obj(
        {
            "comment_id": STR,
            "note_id": NULLABLE_STR,
            "merchant_id": NULLABLE_STR,
            "description": ANY,
            "status": ANY,
            "file_attachment_ids": LIST,
            "created_by": ANY,
            "updated_by": ANY,
            "created_time": NULLABLE_NUM,
            "updated_time": NULLABLE_NUM,
            "source": ANY,
            **_ENTITY_TAIL,
        }
    ),  # fmt: skip
    "HistoryItem": _obj(
        {
            "seq": INT,
            "message_id": STR,
            "event_type": STR,
            "entity": {"enum": ["note", "comment", None]},
            "entity_id": NULLABLE_STR,
            "action_time": NUM,
            "created_time": ANY,
            "received_at": NUM,
            "request_id": NULLABLE_STR,
            "app_id": STR,
            "actor": ANY,
            "changes": {"type": ["array", "null"]},
        }
    ),  # fmt: skip
    "MentionItem": _obj(
        {
            "note_id": STR,
            "merchant_id": NULLABLE_STR,
            "mentioned_at": NUM,
            "description": ANY,
            "type": ANY,
            "source": ANY,
            "object_id": ANY,
            "created_by": ANY,
        }
    ),  # fmt: skip
}


def _list_of(name: str) -> dict[str, Any]:
    return {"type": "array", "items": _ref(name)}


SCHEMAS.update({
    "History": _obj({"note_id": STR, "events": _list_of("HistoryItem")}),
    "Thread": _obj({"note_id": STR, "comments": _list_of("Comment")}),
    "NotePage": _obj({"items": _list_of("Note"), "next_cursor": NULLABLE_STR}),
    "MentionPage": _obj({"items": _list_of("MentionItem"), "next_cursor": NULLABLE_STR}),
    "EventPage": _obj({"events": _list_of("HistoryItem"), "next_after": NULLABLE_INT}),
})  # fmt: skip


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _errors(*codes: int) -> dict[str, Any]:
    meaning = {
        400: "a bad parameter (the error names it)",
        401: "missing, bad or unknown credentials",
        403: "no query tokens are configured",
        404: "nothing visible under this id",
        413: "body larger than max_body_bytes",
        503: "the log cannot commit, or the view is being built (Retry-After)",
    }
    return {str(c): _json("Error", meaning[c]) for c in codes}


def _param(
    name: str, where: str, description: str, schema: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "description": description,
            "schema": schema or STR}  # fmt: skip


NOTE_ID = _param("note_id", "path", "the note's id (at most 128 characters)")
LIMIT = _param("limit", "query", "items per page, 1 to 500 (default 50)", INT)
CURSOR = _param("cursor", "query", "the next_cursor of the previous page")
QUERY_ERRORS = _errors(400, 401, 403, 404, 503)
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def _get(
    summary: str,
    ok: dict[str, Any],
    *params: dict[str, Any],
    errors: dict[str, Any] | None = None,
    secured: bool = True,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": list(params),
        "responses": {"200": ok, **(QUERY_ERRORS if errors is None else errors)},
    }
    if secured:
        operation["security"] = BEARER
    return {"get": operation}


PATHS: dict[str, Any] = {
    "/webhooks/mobio": {
        "post": {
            "summary": "Receive a Mobio note webhook (signed with X-mevent-signature)",
            "parameters": [
                _param("X-mevent-signature", "header", "sha256(app_id + body + secret), hex")
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "responses": {
                "200": _json("DeliveryAnswer", "stored durably"),
                **_errors(401, 413, 503),
            },
        },
        **_get("Mobio's online check", {"description": "online"}, errors={}, secured=False),
    },
    "/healthz": _get(
        "Health of the log and the views",
        _json("Health", "ok or degraded"),
        errors=_errors(503),
        secured=False,
    ),  # fmt: skip
    "/metrics": _get(
        "Prometheus metrics",
        {"description": "Prometheus text format", "content": {"text/plain": {"schema": STR}}},
        errors={},
        secured=False,
    ),  # fmt: skip
    "/openapi.json": _get(
        "This document", {"description": "OpenAPI 3.1"}, errors={}, secured=False
    ),
    "/notes": _get(
        "Live notes whose object_id or related_to holds an id, newest first",
        _json("NotePage", "a page of notes"),
        _param("related_to", "query", "a deal, profile, ticket or company id"),
        LIMIT,
        CURSOR,
    ),
    "/notes/{note_id}": _get(
        "A note now, or folded from its events up to as_of",
        _json("Note", "the note"),
        NOTE_ID,
        _param("as_of", "query", "epoch seconds or ISO-8601 (no zone means UTC)"),
    ),
    "/notes/{note_id}/history": _get(
        "Every event about the note and its comments, by stamp",
        _json("History", "the history"),
        NOTE_ID,
    ),
    "/notes/{note_id}/comments": _get(
        "The note's comment thread",
        _json("Thread", "the comments"),
        NOTE_ID,
        _param(
            "include_deleted", "query", "true or false (default false)", {"enum": ["true", "false"]}
        ),
    ),
    "/events": _get(
        "The log in seq order, to follow it from another system",
        _json("EventPage", "a page of events"),
        _param("after", "query", "the log position to read after (default 0)", INT),
        _param("limit", "query", "events per page, 1 to 1000 (default 100)", INT),
    ),
    "/accounts/{account_id}/mentions": _get(
        "Notes that mention the account now, newest mention first",
        _json("MentionPage", "a page"),
        _param("account_id", "path", "the account id"),
        LIMIT,
        CURSOR,
    ),
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "notestore",
            "version": "1",
            "description": "Mobio note webhooks, their log and views.",
        },
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


async def serve_document(request: web.Request) -> web.Response:
    return web.json_response(document())
