"""serve's restart policy: at once after one death, backing off while a child keeps dying young."""

from __future__ import annotations

from app.restarts import MAX_DELAY_S, QUICK_S, Restarts


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_child_dying_young_again_and_again_waits_longer_each_time() -> None:
    clock = Clock()
    restarts = Restarts(clock)
    delays = []
    for _ in range(9):
        restarts.started("log_writer")
        clock.now += 0.5  # dies half a second after each start
        delays.append(restarts.died("log_writer"))
        clock.now += delays[-1]
        assert restarts.due() == ["log_writer"]
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, MAX_DELAY_S, MAX_DELAY_S, MAX_DELAY_S]


def test_a_child_that_lived_a_while_is_restarted_at_once_and_counts_afresh() -> None:
    clock = Clock()
    restarts = Restarts(clock)
    for _ in range(3):
        restarts.started("worker 0")
        clock.now += 1
        restarts.died("worker 0")
        restarts.due()
    restarts.started("worker 0")
    clock.now += QUICK_S + 1
    assert restarts.died("worker 0") == 0.0
    assert restarts.due() == ["worker 0"]


def test_a_waiting_restart_is_not_due_early_and_children_are_counted_apart() -> None:
    clock = Clock()
    restarts = Restarts(clock)
    for child in ("worker 0", "worker 1"):
        restarts.started(child)
    restarts.died("worker 0")
    assert restarts.due() == ["worker 0"]
    restarts.started("worker 0")
    assert restarts.died("worker 0") == 1.0  # its second young death
    assert restarts.died("worker 1") == 0.0  # the other's first
    assert restarts.due() == ["worker 1"]
    clock.now += 0.9
    assert restarts.due() == []
    clock.now += 0.1
    assert restarts.due() == ["worker 0"]
