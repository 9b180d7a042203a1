"""A realistic workload for benchmarks: deliveries shaped like Mobio's six samples.

Many notes and comments, mentions of a pool of accounts, the samples' quirks
(aliases, wrapped lists, ISO and epoch times), HTML descriptions, UUID message ids.
"""

from __future__ import annotations

import copy
import json
import random
import uuid
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).resolve().parent.parent / "examples" / "mobio"
TEMPLATES = [json.loads(p.read_bytes()) for p in sorted(SAMPLES.glob("*.json"))]
MERCHANT = "1b99bdcf-d582-4f49-9715-1b61dfff3924"


class Workload:
    def __init__(self, seed: int = 1, notes: int = 20_000, accounts: int = 500) -> None:
        self.rng = random.Random(seed)
        self.notes = [f"{self.rng.getrandbits(96):024x}" for _ in range(notes)]
        self.accounts = [str(uuid.UUID(int=self.rng.getrandbits(128))) for _ in range(accounts)]
        self.clock = 1_669_000_000.0

    def _note(self) -> str:
        # a few hot notes get most events, as in real use
        return self.notes[min(int(self.rng.paretovariate(1.2)) - 1, len(self.notes) - 1)]

    def block(self) -> dict[str, Any]:
        template = self.rng.choice(TEMPLATES)
        block = copy.deepcopy(template["block_event"][0])
        self.clock += self.rng.uniform(0, 2)
        event = block["data_event"]
        block["message_id"] = str(uuid.UUID(int=self.rng.getrandbits(128)))
        event["action_time"] = round(self.clock, 6)
        event["created_time"] = round(self.clock + 2, 6)
        note = self._note()
        if "note_id" in event:
            event["note_id"] = note
            # a note mentions the same one to three people each time it is edited
            seed = int(note, 16)
            mentioned = [
                self.accounts[(seed >> (8 * k)) % len(self.accounts)] for k in range(seed % 3 + 1)
            ]
            event["event_detail"].append(
                {"field_key": "account_mentions", "field_name": "Người được nhắc đến",
                 "add": [mentioned], "change": [], "remove": []}
            )  # fmt: skip
        else:
            event["comment_id"] = f"c{note[1:]}{self.rng.randrange(4)}"
            for item in event["event_detail"]:
                if item["field_key"] == "object_id":
                    item["add"] = [note] if item["add"] else []
                    item["remove"] = [note] if item["remove"] else []
        for item in event["event_detail"]:
            if item["field_key"] == "description" and item["add"]:
                item["add"] = [f"<div>Ghi chú {self.rng.randrange(10**6)} về khách hàng</div>"]
        return block

    def body(self, blocks: int = 1) -> dict[str, Any]:
        template = self.rng.choice(TEMPLATES)
        return {
            "merchant_id": MERCHANT,
            "timestamp": int(self.clock),
            "block_event": [self.block() for _ in range(blocks)],
            "app_id": template["app_id"],
            "request_id": str(uuid.UUID(int=self.rng.getrandbits(128))),
            "version": 1,
        }

    def raw(self) -> bytes:
        return json.dumps(self.body(), ensure_ascii=False, indent=1).encode()
