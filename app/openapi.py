"""The OpenAPI 3.1 document of every route, served at /openapi.json.

Every parameter's bounds are the server's own (app/queries/params.py, app/api.py).
tests/test_openapi.py calls every route and validates each answer against it, and
tests/test_schemathesis.py fuzzes a live server with it, so this document cannot
drift from what the service does.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from app.signing import SIGNATURE_HEADER

ANY: dict[str, Any] = {}
STR = {"type": "string"}
NUM = {"type": "number"}
INT = {"type": "integer"}
NULLABLE_STR = {"type": ["string", "null"]}
NULLABLE_NUM = {"type": ["number", "null"]}
NULLABLE_INT = {"type": ["integer", "null"]}
LIST = {"type": "array"}
OBJECT = {"type": "object"}


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

# What every history item says of its event, an erased one too (no changes, no actor).
_LOGGED: dict[str, Any] = {
    "seq": INT,
    "message_id": STR,
    "event_type": STR,
    "entity": {"enum": ["note", "comment", None]},
    "entity_id": NULLABLE_STR,
    "merchant_id": NULLABLE_STR,
    "action_time": NUM,
    "received_at": NUM,
}

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": STR}),
    "Ambiguous": _obj({"error": STR, "merchants": {"type": "array", "items": NULLABLE_STR}}),
    "DeliveryAnswer": {
        **_obj({"accepted": INT, "duplicates": INT, "quarantined": INT}),
        "properties": {
            "accepted": INT,
            "duplicates": INT,
            "quarantined": INT,
            # kept in the spool while the log could not commit: drained into it later, where
            # duplicates and conflicts are settled (accepted counts the valid blocks)
            "spooled": {"type": "boolean", "const": True},
        },
    },
    "Online": _obj({"status": {"const": "ok"}}),
    "Health": {
        "type": "object",
        "properties": {
            "status": {"enum": ["ok", "degraded", "unavailable"]},
            "backend": {"enum": ["sqlite", "postgresql"]},
            "reasons": {"type": "array", "items": STR},
            "views_catching_up": {"type": "array", "items": STR},
        },
        "required": ["status", "backend"],
        "additionalProperties": False,
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
    "ErasedItem": _obj({**_LOGGED, "erased": {"const": True}}),
    "LoggedItem": _obj(
        {
            **_LOGGED,
            "created_time": ANY,
            "request_id": NULLABLE_STR,
            "app_id": STR,
            "actor": ANY,
            "changes": {"type": ["array", "null"]},
        }
    ),
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
    # an event as it was received, or one an erasure removed (notestore erase): no changes
    "HistoryItem": {"oneOf": [_ref("LoggedItem"), _ref("ErasedItem")]},
    "History": _obj({"note_id": STR, "events": _list_of("HistoryItem")}),
    "Thread": _obj({"note_id": STR, "comments": _list_of("Comment")}),
    "NotePage": _obj({"items": _list_of("Note"), "next_cursor": NULLABLE_STR}),
    "MentionPage": _obj({"items": _list_of("MentionItem"), "next_cursor": NULLABLE_STR}),
    "EventPage": _obj({"events": _list_of("HistoryItem"), "next_after": NULLABLE_INT}),
    "SearchItem": _obj({
        "note_id": STR, "merchant_id": NULLABLE_STR, "type": ANY, "result": ANY,
        "created_by": ANY, "last_action_time": NUM,
        "snippet": {"type": "string", "description": "HTML: the text escaped, matches in <mark>"},
    }),
    "SearchPage": _obj({"items": _list_of("SearchItem"), "next_cursor": NULLABLE_STR}),
})  # fmt: skip


RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before asking again",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}


def _json(schema: str, description: str, **more: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref(schema)}},
        **more,
    }


_MEANING = {
    400: "a bad parameter (the error names it), or more than one Authorization header",
    401: "missing, bad or unknown credentials",
    403: "no query tokens are configured",
    404: "nothing this token may read under this id",
    410: "the note was erased (notestore erase): its data is gone for good",
    413: "body larger than max_body_bytes; nothing was stored",
    503: "the log cannot commit, or the view is being built",
}


def _errors(*codes: int) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for code in codes:
        if code == 409:
            answers["409"] = _json(
                "Ambiguous", "the id is held by several merchants: name one with ?merchant_id="
            )
        elif code == 503:
            answers["503"] = _json("Error", _MEANING[503], headers=RETRY_AFTER)
        else:
            answers[str(code)] = _json("Error", _MEANING[code])
    return answers


def _param(
    name: str,
    where: str,
    description: str,
    schema: dict[str, Any] | None = None,
    required: bool | None = None,
    examples: dict[str, str] | None = None,
) -> dict[str, Any]:
    param = {
        "name": name,
        "in": where,
        "required": where == "path" if required is None else required,
        "description": description,
        "schema": schema or STR,
    }
    if examples:
        param["examples"] = {key: {"value": value} for key, value in examples.items()}
    return param


# app.queries.params: ids are 1 to MAX_ID (128) characters; limit is 1 to 6 digits whose
# value is 1 to the route's maximum; after is 1 to 18 digits; as_of is epoch seconds
# (-?[0-9]+(\.[0-9]+)?) or an ISO-8601 time of projections.values.parse_iso's form.
ID = {"type": "string", "minLength": 1, "maxLength": 128}
_DATE = r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]+)?)?"
AS_OF = {
    "type": "string",
    "pattern": rf"^(-?[0-9]+(\.[0-9]+)?|{_DATE}[Tt]{_TIME}([Zz]|[+-][0-9]{{2}}:?[0-9]{{2}})?)$",
}


def _limit(default: int, maximum: int, what: str = "items") -> dict[str, Any]:
    return _param(
        "limit", "query", f"{what} per page, 1 to {maximum} (default {default}), in digits",
        {"type": "integer", "minimum": 1, "maximum": maximum},
    )  # fmt: skip


def _id(name: str, description: str, examples: dict[str, str]) -> dict[str, Any]:
    return _param(name, "path", f"{description} (1 to 128 characters)", ID, examples=examples)


# Examples: ids of Mobio's own samples (examples/mobio, spec/webhooks.md)
NOTE_ID = _id(
    "note_id",
    "the note's id",
    {"note": "637dfa373e395b0cead72666", "commented": "63843fceb0d322e9a7678bec"},
)
MERCHANT = _param(
    "merchant_id",
    "query",
    "the merchant whose note is meant, when several hold this id (1 to 128 characters)",
    ID,
    examples={"merchant": "1b99bdcf-d582-4f49-9715-1b61dfff3924"},
)
CURSOR = _param("cursor", "query", "the next_cursor of the previous page")
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
SIGNATURE: list[dict[str, list[str]]] = [{"signature": []}]
QUERY = (400, 401, 403)
ENTITY = (*QUERY, 404, 409, 503)
NOTE = (*ENTITY, 410)


def _get(
    summary: str,
    ok: dict[str, Any],
    *params: dict[str, Any],
    errors: tuple[int, ...] = (),
    secured: bool = True,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": list(params),
        "responses": {"200": ok, **_errors(*errors)},
    }
    if secured:
        operation["security"] = BEARER
    return {"get": operation}


WEBHOOK_BODY = (
    "The raw bytes Mobio sent, whatever the Content-Type: the signature covers them "
    "exactly as received. They are read only once the signature matches; then every "
    "body is answered 200, and what is not a valid envelope or block is kept in "
    "quarantine (its count in `quarantined`)."
)

PATHS: dict[str, Any] = {
    "/webhooks/mobio": {
        "post": {
            "summary": "Receive a Mobio note webhook",
            "description": WEBHOOK_BODY,
            "security": SIGNATURE,
            "parameters": [],
            "requestBody": {
                "required": False,
                "description": "any bytes (Mobio sends a JSON envelope)",
                "content": {
                    "application/json": {"schema": ANY},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            "responses": {
                "200": _json(
                    "DeliveryAnswer",
                    "stored durably in the log, or in the local spool when the log cannot"
                    " commit in time (spooled: true), or quarantined",
                ),
                **_errors(401, 413, 503),
            },
        },
        **_get("Mobio's online check", _json("Online", "online"), secured=False),
    },
    "/healthz": {
        "get": {
            "summary": "Health of the log and the views",
            "parameters": [],
            "responses": {
                "200": _json("Health", "ok, or degraded (a projector is stuck)"),
                "503": _json("Health", "the log cannot commit", headers=RETRY_AFTER),
            },
        }
    },
    "/metrics": _get(
        "Prometheus metrics",
        {"description": "Prometheus text format", "content": {"text/plain": {"schema": STR}}},
        secured=False,
    ),
    "/openapi.json": _get(
        "This document",
        {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": OBJECT}}},
        secured=False,
    ),
    "/notes": _get(
        "Live notes whose object_id or related_to holds an id, newest first",
        _json("NotePage", "a page of notes (of every merchant the token may read)"),
        _param(
            "related_to",
            "query",
            "a deal, profile, ticket or company id (1 to 128 characters)",
            ID,
            required=True,
            examples={"deal": "635b528eb3528d2e7a0477ba"},
        ),
        _limit(50, 500),
        CURSOR,
        errors=(*QUERY, 503),
    ),  # fmt: skip
    "/notes/{note_id}": _get(
        "A note now, or folded from its events up to as_of",
        _json("Note", "the note"),
        NOTE_ID,
        _param(
            "as_of",
            "query",
            "epoch seconds, or an ISO-8601 time like 2022-11-23T10:47Z (no zone means UTC;"
            " a day the month does not have, or year 0000, is a 400)",
            AS_OF,
        ),
        MERCHANT,
        errors=NOTE,
    ),  # fmt: skip
    "/notes/{note_id}/history": _get(
        "Every event about the note and its comments, by stamp",
        _json("History", "the history"),
        NOTE_ID,
        MERCHANT,
        errors=NOTE,
    ),
    "/notes/{note_id}/comments": _get(
        "The note's comment thread",
        _json("Thread", "the comments"),
        NOTE_ID,
        _param(
            "include_deleted", "query", "true or false (default false)", {"enum": ["true", "false"]}
        ),
        MERCHANT,
        errors=NOTE,
    ),
    "/events": _get(
        "The log in seq order, to follow it from another system",
        _json("EventPage", "a page of events (of every merchant the token may read)"),
        _param(
            "after",
            "query",
            "the log position to read after (default 0), 1 to 18 digits",
            {"type": "integer", "minimum": 0, "maximum": 10**18 - 1},
        ),
        _limit(100, 1000, "events"),
        errors=QUERY,
    ),  # fmt: skip
    "/accounts/{account_id}/mentions": _get(
        "Notes that mention the account now, newest mention first",
        _json("MentionPage", "a page (of every merchant the token may read)"),
        _id("account_id", "the account id", {"account": "70176784-07f7-4eb7-9280-4028f21152b7"}),
        _limit(50, 500),
        CURSOR,
        errors=(*QUERY, 503),
    ),
    "/search": _get(
        "Live notes whose text (description, type, result, comments) holds every word, best"
        " match first",
        _json("SearchPage", "a page (of every merchant the token may read)"),
        _param(
            "q",
            "query",
            "words to find (1 to 500 characters, at most 16 words; accents, đ and case are"
            " ignored; no search syntax: quotes and operators are plain characters)",
            {"type": "string", "minLength": 1, "maxLength": 500},
            required=True,
            examples={"words": "ghi chu"},
        ),
        _limit(20, 100),
        CURSOR,
        errors=(*QUERY, 503),
    ),
}

# (method, path) of every operation that reads `Authorization: Bearer`.
SECURED = frozenset(
    (method, path)
    for path, operations in PATHS.items()
    for method, operation in operations.items()
    if operation.get("security") == BEARER
)


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
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "signature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": SIGNATURE_HEADER,
                    "description": "sha256(app_id + body + secret) as hex, for a configured app",
                },
            },
        },
    }


async def serve_document(request: web.Request) -> web.Response:
    return web.json_response(document())
