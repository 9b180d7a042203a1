"""(d) A crash between any two steps of a batch leaves view and checkpoint consistent; resuming
finishes the job. On both backends (tests/backends.py): on PostgreSQL a SIGKILLed projector's
connection drops, and the server rolls its open batch back and frees its write lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from projections.engine import STEPS, step
from projections.registry import all_projectors
from projections.storage import Storage
from projections.store import LIVE, position
from tests import backends as kit
from tests.helpers import ROOT, make_block
from tests.strategies import T0
from tests.views_kit import Views, append_blocks, fold_from_scratch, fold_prefix

backend, backends, pg_server = kit.backend, kit.backends, kit.pg_server

PROJECTORS = all_projectors()


class Crash(Exception):
    pass


def seed_log(storage: Storage) -> None:
    blocks = []
    for i in range(12):
        note, comment = f"n{i % 3}", f"c{i % 4}"
        blocks.append(
            make_block(
                "note_create",
                note_id=note,
                action_time=T0 + i,
                event_detail=[{"field_key": "account_mentions", "add": [[f"a{i % 2}"]]}],
            )
        )
        blocks.append(
            make_block(
                "note_comment_update_data",
                comment_id=comment,
                action_time=T0 + i,
                event_detail=[{"field_key": "object_id", "add": [note]}],
            )
        )
    blocks.append(make_block("note_delete", note_id="n1", action_time=T0 + 50))
    append_blocks(storage, blocks, per_request=3)


def crash_in_batch(views: Views, point: str, batch_number: int) -> None:
    """Step the view in batches of 4 until the `batch_number`th time a batch reaches `point`,
    where it raises (and the batch's transaction rolls back)."""
    calls = {"n": 0}

    def hook(at: str) -> None:
        if at == point:
            calls["n"] += 1
            if calls["n"] == batch_number:
                raise Crash(at)

    with pytest.raises(Crash):
        while step(views.projector, views.views, views.log, limit=4, hook=hook):
            pass


@pytest.mark.parametrize("projector", PROJECTORS, ids=lambda p: p.name)
@pytest.mark.parametrize("point", STEPS)
@pytest.mark.parametrize("batch_number", [1, 3])
def test_an_exception_at_any_step_rolls_the_batch_back(backend, projector, point, batch_number):
    views = Views(backend, projector)
    views.build()
    seed_log(backend)
    crash_in_batch(views, point, batch_number)
    checkpoint = position(views.views, projector.name, LIVE)
    assert checkpoint == 4 * (batch_number - 1)
    assert views.dump() == fold_prefix(backend, projector, checkpoint)
    views.catch_up(limit=4)
    assert views.dump() == fold_from_scratch(backend, projector)
    views.close()


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from projections.registry import projectors_named
    from projections.storage import Storage
    from tests.views_kit import Views
    views = Views(Storage(Path({data!r}), {url!r}), projectors_named([{name!r}])[0])
    calls = 0
    def hook(at):
        global calls
        calls += 1
        if calls == {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)
    from projections.engine import catch_up
    catch_up(views.projector, views.views, views.log, limit=4, hook=hook)
    """
)


@pytest.mark.parametrize("projector", PROJECTORS, ids=lambda p: p.name)
@pytest.mark.parametrize("kill_at", [1, 2, 3, 4, 7, 10, 13])
def test_a_sigkill_at_any_step_loses_nothing_and_applies_nothing_twice(backend, projector, kill_at):
    views = Views(backend, projector)
    views.build()
    seed_log(backend)
    views.close()
    script = KILLER.format(
        root=str(ROOT), data=str(backend.data_dir), url=backend.database_url,
        name=projector.name, kill_at=kill_at,
    )  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == -9, done.stderr.decode()
    views = Views(backend, projector)
    checkpoint = position(views.views, projector.name, LIVE)
    assert checkpoint is not None and checkpoint % 4 == 0
    assert views.dump() == fold_prefix(backend, projector, checkpoint)
    views.catch_up()  # on PostgreSQL: waits for the write lock until the server drops the dead one
    assert views.dump() == fold_from_scratch(backend, projector)
    views.close()
