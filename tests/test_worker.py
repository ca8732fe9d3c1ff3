"""The worker's streamed request tasks: items in order, errors before and after the first
item, a reader that hangs up, and the turn given back in every case."""
from __future__ import annotations

import threading

import pytest

from gapfill.worker import Busy, Stream, Worker


def _counting(n: int, fail_at: int | None = None, gate: threading.Event | None = None):
    def work():
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"bad item {i}")
            if gate is not None and i:
                assert gate.wait(10)
            yield i
        return "done"

    return work


def _drain(stream: Stream) -> list:
    items = []
    while (item := stream.next()) is not None:
        items.append(item)
    return items


def _turn_is_free(worker: Worker) -> bool:
    done = threading.Event()

    def take() -> None:
        with worker.exclusive("probe"):
            done.set()

    threading.Thread(target=take, daemon=True).start()
    return done.wait(10)


def test_a_stream_hands_over_each_item_then_the_result():
    worker = Worker()
    stream = worker.stream("count", _counting(3))
    assert _drain(stream) == [("step", 0), ("step", 1), ("step", 2), ("result", "done")]
    assert _turn_is_free(worker)


def test_an_error_before_the_first_item_is_raised_and_one_after_is_handed_over():
    worker = Worker()
    with pytest.raises(ValueError, match="bad item 0"):
        worker.stream("count", _counting(3, fail_at=0)).next()
    assert _drain(worker.stream("count", _counting(3, fail_at=2))) == [
        ("step", 0), ("step", 1), ("error", "ValueError: bad item 2")]
    assert _turn_is_free(worker)


def test_a_refused_turn_is_raised_by_the_first_next():
    def training(stop: threading.Event):
        stop.wait(10)  # a training that runs until it is asked to stop
        yield from ()

    worker = Worker()
    job = worker.start("train", training)
    try:
        with pytest.raises(Busy, match="train job is running"):
            worker.stream("count", _counting(3)).next()
    finally:
        job.stop()
        job.wait()


def test_a_reader_that_hangs_up_stops_the_task_at_its_next_item_and_frees_the_turn():
    worker, gate = Worker(), threading.Event()
    stream = worker.stream("count", _counting(100, gate=gate))
    assert stream.next() == ("step", 0)
    stream.abandon()
    gate.set()  # the task goes on to item 1, then sees that nobody reads
    assert _drain(stream) == [("step", 1)]
    assert _turn_is_free(worker)
