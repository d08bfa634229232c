"""The background meta-batch preparation: order, errors, shutdown, and real overlap."""

import threading

import pytest

from data.prefetch import Prefetcher


def test_items_come_in_order():
    with Prefetcher((i * i for i in range(50)), depth=3) as p:
        assert list(p) == [i * i for i in range(50)]


def test_an_error_is_raised_at_its_item():
    def items():
        yield 1
        yield 2
        raise ValueError("bad episode")

    with Prefetcher(items()) as p:
        assert next(p) == 1 and next(p) == 2
        with pytest.raises(ValueError, match="bad episode"):
            next(p)
        with pytest.raises(StopIteration):  # and stops there
            next(p)


def test_next_item_is_prepared_while_the_current_one_is_used():
    started = [threading.Event() for _ in range(3)]

    def items():
        for i in range(3):
            started[i].set()
            yield i

    with Prefetcher(items(), depth=1) as p:
        assert next(p) == 0
        # The consumer holds item 0 and has not asked for more: item 1 is being prepared anyway.
        assert started[1].wait(timeout=10)


def test_close_stops_an_endless_producer():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    p = Prefetcher(endless(), depth=2)
    assert next(p) == 0
    p.close()
    assert not p._thread.is_alive()
    with pytest.raises(StopIteration):
        next(p)


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        Prefetcher([], depth=0)
