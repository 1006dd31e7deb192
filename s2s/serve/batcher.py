"""Batching across requests: concurrent requests to one model are gathered into one batch, as serving systems do
(TorchServe's batch size and maximum batch delay, Triton's dynamic batcher), because one batched search costs little
more than one sentence on its own.

A batch opens when a request arrives while the model is idle and closes when it holds ``max_batch`` items (texts,
images; a request may bring several) or ``max_wait`` seconds after it opened, whichever comes first; then it runs in
a worker thread, so that the event loop goes on accepting requests meanwhile, and each request gets back the results
of its own items, in order. A request that would overflow the batch waits for the next one; a request larger than
``max_batch`` runs alone. A request whose caller has gone (its future cancelled, say by a timeout) is dropped before
its batch runs. When a batch fails, each of its requests is run again on its own, so that a bad input fails its own
request only; the batcher itself never stops on an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


@dataclass
class Request:
    items: Sequence[Any]
    answer: asyncio.Future


class Batcher:
    def __init__(self, run: Callable[[list], list], max_batch: int, max_wait: float):
        """``run``: items → one result per item, called in the worker thread (one at a time)."""
        if max_batch < 1 or max_wait < 0:
            raise ValueError(f"max_batch must be at least 1 and max_wait 0 or more, not {max_batch} and {max_wait}")
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait
        self.queue: asyncio.Queue[Request | None] = asyncio.Queue()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s2s-batch")
        self.held: Request | None = None  # a request that did not fit the last batch: the next batch starts with it
        self.task: asyncio.Task | None = None
        self.stopping = False

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.serve())

    async def stop(self) -> None:
        """Answer every request submitted so far, then stop."""
        await self.queue.put(None)
        if self.task is not None:
            await self.task
        self.worker.shutdown(wait=True)

    async def submit(self, items: Sequence[Any]) -> list:
        """The results of ``items``, computed in some batch; raises what running them alone raised."""
        if not items:
            return []
        request = Request(items, asyncio.get_running_loop().create_future())
        await self.queue.put(request)
        return await request.answer

    async def serve(self) -> None:
        while True:
            batch = await self.gather()
            if batch:
                await self.answer(batch)
            if self.stopping and self.held is None:
                return

    async def gather(self) -> list[Request]:
        """The next batch (empty when ``stop`` is all there is)."""
        loop = asyncio.get_running_loop()
        first, self.held = self.held, None
        if first is None:
            first = await self.queue.get()
            if first is None:
                self.stopping = True
                return []
        batch, size, closes = [first], len(first.items), loop.time() + self.max_wait
        while size < self.max_batch and not self.stopping:
            try:
                request = await asyncio.wait_for(self.queue.get(), max(0.0, closes - loop.time()))
            except asyncio.TimeoutError:  # noqa: UP041 — the builtin only from Python 3.11
                break
            if request is None:  # stop: answer what is here, without waiting for more
                self.stopping = True
            elif size + len(request.items) > self.max_batch:
                self.held = request
                break
            else:
                batch.append(request)
                size += len(request.items)
        return batch

    async def answer(self, batch: list[Request]) -> None:
        batch = [request for request in batch if not request.answer.done()]  # callers that gave up
        if not batch:
            return
        loop = asyncio.get_running_loop()
        items = [item for request in batch for item in request.items]
        try:
            results = await loop.run_in_executor(self.worker, self.run, items)
        except Exception as error:  # noqa: BLE001 — find the request that fails, and fail it alone
            if len(batch) == 1:
                settle(batch[0], error=error)
                return
            for request in batch:
                await self.answer([request])
            return
        if len(results) != len(items):  # a bug in ``run``: every request of the batch learns of it
            mismatch = RuntimeError(f"the batch function gave {len(results)} results for {len(items)} items")
            for request in batch:
                settle(request, error=mismatch)
            return
        start = 0
        for request in batch:
            settle(request, result=list(results[start : start + len(request.items)]))
            start += len(request.items)


def settle(request: Request, result: list | None = None, error: Exception | None = None) -> None:
    if request.answer.done():  # its caller gave up while it ran
        return
    if error is not None:
        request.answer.set_exception(error)
    else:
        request.answer.set_result(result)
