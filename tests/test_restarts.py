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
        restarts.started("projectors")
        clock.now += 0.5  # dies half a second after each start
        delays.append(restarts.died("projectors"))
        clock.now += delays[-1]
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, MAX_DELAY_S, MAX_DELAY_S, MAX_DELAY_S]


def test_a_child_that_lived_a_while_is_restarted_at_once_and_counts_afresh() -> None:
    clock = Clock()
    restarts = Restarts(clock)
    for _ in range(3):
        restarts.started("projectors")
        clock.now += 1
        restarts.died("projectors")
    restarts.started("projectors")
    clock.now += QUICK_S + 1
    assert restarts.died("projectors") == 0.0
    restarts.started("projectors")
    clock.now += 1
    assert restarts.died("projectors") == 1.0  # young again: the count started afresh


def test_children_are_counted_apart() -> None:
    clock = Clock()
    restarts = Restarts(clock)
    for child in ("a", "b"):
        restarts.started(child)
    assert restarts.died("a") == 0.0
    restarts.started("a")
    assert restarts.died("a") == 1.0  # its second young death
    assert restarts.died("b") == 0.0  # the other's first
