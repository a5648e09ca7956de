"""collect.seldom: the collector as a delivery wants it, and as it was afterwards."""

from __future__ import annotations

import gc
import weakref

import pytest

from digestmail import collect


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_seldom_collects_seldom_inside_and_restores_the_thresholds_after():
    before = gc.get_threshold()
    with collect.seldom():
        assert gc.get_threshold() == collect.THRESHOLDS
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle made inside: only the collector frees it
        gone = weakref.ref(a)
        del a, b
        gc.collect()  # an explicit collection still collects it
        assert gone() is None
    assert gc.get_threshold() == before


def test_seldom_restores_the_collector_when_the_block_fails():
    before = gc.get_threshold()
    try:
        with collect.seldom():
            raise ValueError("a delivery that failed")
    except ValueError:
        pass
    assert gc.get_threshold() == before


def test_prompt_readers_shortens_the_switch_interval_and_restores_it():
    import sys

    from digestmail.buildpool import READER_SWITCH, prompt_readers

    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        default = sys.getswitchinterval()  # (held in microseconds: read back, not compared with a float)
        with prompt_readers():
            assert sys.getswitchinterval() == pytest.approx(READER_SWITCH, abs=2e-6)
        assert sys.getswitchinterval() == pytest.approx(default, abs=2e-6)
        sys.setswitchinterval(0.0001)  # already shorter: kept
        short = sys.getswitchinterval()
        with prompt_readers():
            assert sys.getswitchinterval() == short
        with pytest.raises(RuntimeError), prompt_readers():
            raise RuntimeError("the delivery failed")
        assert sys.getswitchinterval() == short
    finally:
        sys.setswitchinterval(before)
