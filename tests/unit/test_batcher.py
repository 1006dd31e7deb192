"""Batching across requests (s2s.serve.batcher): concurrent requests share a batch within its size and wait
bounds, each gets its own results, a failing input fails only its own request, and stopping answers everyone."""

from __future__ import annotations

import asyncio
import threading

import pytest

from s2s.serve.batcher import Batcher


class Model:
    """Doubles numbers in the worker thread, remembering each batch; a negative number is an input it fails on."""

    def __init__(self):
        self.batches, self.threads = [], set()

    def __call__(self, items: list) -> list:
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        if any(item < 0 for item in items):
            raise ValueError("negative input")
        return [2 * item for item in items]


def serve(model: Model, requests: list[list[int]], max_batch: int, max_wait: float = 0.05) -> list:
    """Submit every request at once; return each one's results (or the exception it raised)."""

    async def main():
        batcher = Batcher(model, max_batch, max_wait)
        batcher.start()
        answers = await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)
        await batcher.stop()
        return answers

    return asyncio.run(main())


def test_concurrent_requests_share_one_batch_and_each_gets_its_own_results():
    model = Model()
    assert serve(model, [[1], [2, 3], [4]], max_batch=8) == [[2], [4, 6], [8]]
    assert model.batches == [[1, 2, 3, 4]]
    assert model.threads and threading.main_thread().name not in model.threads  # the event loop never ran it


def test_a_batch_holds_at_most_max_batch_items_and_a_request_that_does_not_fit_waits_for_the_next():
    model = Model()
    assert serve(model, [[1, 2], [3, 4], [5], [6, 7, 8]], max_batch=4) == [[2, 4], [6, 8], [10], [12, 14, 16]]
    assert model.batches == [[1, 2, 3, 4], [5, 6, 7, 8]]
    big = Model()
    assert serve(big, [[1, 2, 3, 4, 5, 6]], max_batch=4) == [[2, 4, 6, 8, 10, 12]]  # larger than a batch: alone
    assert big.batches == [[1, 2, 3, 4, 5, 6]]


def test_a_lone_request_is_answered_when_the_wait_ends():
    model = Model()
    assert serve(model, [[5]], max_batch=64, max_wait=0.01) == [[10]]
    assert model.batches == [[5]]


def test_a_failing_input_fails_its_own_request_only_and_the_batcher_goes_on():
    model = Model()
    first, bad, last = serve(model, [[1], [-1, 2], [3]], max_batch=8)
    assert first == [2] and last == [6]
    assert isinstance(bad, ValueError) and str(bad) == "negative input"
    assert model.batches[0] == [1, -1, 2, 3] and sorted(model.batches[1:]) == [[-1, 2], [1], [3]]


def test_stopping_answers_every_request_submitted_before_it():
    model = Model()

    async def main():
        batcher = Batcher(model, max_batch=2, max_wait=10.0)  # a long wait: stop must not sit it out
        batcher.start()
        pending = [asyncio.ensure_future(batcher.submit([n])) for n in range(5)]
        await asyncio.sleep(0)  # let every submit reach the queue
        await asyncio.wait_for(batcher.stop(), timeout=5)
        return [p.result() for p in pending]

    assert asyncio.run(main()) == [[0], [2], [4], [6], [8]]


def test_a_request_whose_caller_gave_up_is_not_run():
    model = Model()

    async def main():
        batcher = Batcher(model, max_batch=8, max_wait=0.05)
        batcher.start()
        kept = asyncio.ensure_future(batcher.submit([1]))
        dropped = asyncio.ensure_future(batcher.submit([2]))
        await asyncio.sleep(0)
        dropped.cancel()
        result = await kept
        await batcher.stop()
        return result

    assert asyncio.run(main()) == [2]
    assert model.batches == [[1]]


def test_impossible_bounds_are_refused():
    with pytest.raises(ValueError, match="max_batch must be at least 1"):
        Batcher(Model(), max_batch=0, max_wait=0.01)


def test_a_models_batch_answers_the_texts_that_share_options_in_one_call_and_keeps_their_order():
    from s2s.serve.app import answer_items
    from s2s.serve.tasks import Endpoint, TextsRequest

    calls = []

    def answer(predictor, texts, options):
        calls.append((texts, options))
        return [f"{text}@{options[0]}" for text in texts]

    endpoint = Endpoint(
        "/echo", TextsRequest, lambda request, predictor, limits: request.texts, lambda r: (), answer, dict
    )
    items = [("a", (1,)), ("b", (5,)), ("c", (1,))]
    assert answer_items(endpoint, None, items) == ["a@1", "b@5", "c@1"]
    assert calls == [(["a", "c"], (1,)), (["b"], (5,))]
