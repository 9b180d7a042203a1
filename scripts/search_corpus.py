"""Live notes for the search benchmark: scripts/workload.py's notes are few and hot (most of a
log's events fall on a few hundred notes, many of them deleted), so a common word there
matches a few dozen notes. These are many distinct live notes, each holding the common word
("khach"), a few words of a 5,000-word vocabulary (one of them matches a few hundred notes
per 100,000) and a number of its own (a word of one note).
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

from benchlib import SECRETS, signed
from workload import MERCHANT, TEMPLATES

from app.config import fingerprint
from eventlog.append import Delivery
from eventlog.intake import read_body
from projections.storage import Storage

COMMON_WORD = "khach"
VOCABULARY = [f"tu{i}" for i in range(5000)]
FIRST_NUMBER = 900_000_000
FEW_WORD = VOCABULARY[42]  # in ~1 note of 300 (16 of 5,000 words per note, on average)


def note_body(rng: random.Random, i: int) -> dict[str, Any]:
    words = " ".join(rng.choices(VOCABULARY, k=rng.randint(3, 30)))
    at = 1_669_000_000.0 + i / 100
    detail = {"field_key": "description", "field_name": "Nội dung", "change": [], "remove": [],
              "add": [f"<div>Ghi chú khách hàng <b>{words}</b> số {FIRST_NUMBER + i}</div>"]}  # fmt: skip
    block = {
        "message_id": str(uuid.UUID(int=rng.getrandbits(128))),
        "event_type": "note_create",
        "data_event": {"note_id": f"s{i:07d}", "merchant_id": MERCHANT, "action_time": at,
                       "created_time": at + 1, "event_detail": [detail]},
    }  # fmt: skip
    app_id = TEMPLATES[0]["app_id"]
    return {"merchant_id": MERCHANT, "timestamp": int(at), "block_event": [block],
            "app_id": app_id, "request_id": str(uuid.uuid4()), "version": 1}  # fmt: skip


def add_search_corpus(storage: Storage, notes: int, batch: int = 5000) -> None:
    """Append `notes` note_create deliveries through the log store's own append path."""
    rng = random.Random(11)
    store = storage.log_store()
    try:
        for start in range(0, notes, batch):
            deliveries = []
            for i in range(start, min(notes, start + batch)):
                body = note_body(rng, i)
                signature, raw = signed(body)
                key = fingerprint(SECRETS[body["app_id"]][0])
                intake = read_body(raw, body["app_id"])
                deliveries.append(
                    Delivery(time.time(), body["app_id"], key, signature, raw, intake)
                )
            store.append(deliveries)
    finally:
        store.close()
