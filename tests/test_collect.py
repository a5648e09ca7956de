"""collect.seldom: the collector as a delivery wants it, and as it was afterwards."""

from __future__ import annotations

import gc
import weakref

from digestmail import collect


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_seldom_collects_seldom_inside_and_restores_everything_after():
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    with collect.seldom():
        assert gc.get_threshold() == collect.THRESHOLDS
        assert gc.get_freeze_count() > frozen  # what existed is out of the collector's way
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle made inside: only the collector frees it
        gone = weakref.ref(a)
        del a, b
        gc.collect()  # an explicit collection still collects what was made inside
        assert gone() is None
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0  # unfrozen: a daemon's next collection sees the run's heap again


def test_seldom_restores_the_collector_when_the_block_fails():
    before = gc.get_threshold()
    try:
        with collect.seldom():
            raise ValueError("a delivery that failed")
    except ValueError:
        pass
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
