"""Micro-batching: the predict requests that reach one model at about the same time are answered by
one call of its predictor (as LitServe and BentoML batch on the server).

A request hands its inputs (already decoded and checked) and its options to ``MicroBatcher.submit``.
One asyncio task per model takes the oldest waiting request, waits at most ``max_delay`` seconds
for others with the same options until ``max_batch`` inputs are gathered, calls the predictor once
in the model's worker thread, and hands each request its own slice of the results. While a batch
runs, new requests queue up, so under load the next batch forms without waiting: throughput grows
with concurrency. A request larger than ``max_batch`` runs alone, whole.

If a batched call fails, each of its requests is run again alone, so one bad input fails only the
request that sent it.
"""
from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

# fn(items, options) -> one result per item, in order
BatchFunction = Callable[[list[Any], Hashable], Sequence[Any]]


@dataclass
class _Waiting:
    items: list[Any]
    options: Hashable
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    def __init__(self, fn: BatchFunction, executor: Executor, max_batch: int = 32, max_delay: float = 0.005):
        if max_batch < 1 or max_delay < 0:
            raise ValueError("max_batch must be at least 1 and max_delay not negative")
        self.fn, self.executor = fn, executor
        self.max_batch, self.max_delay = max_batch, max_delay
        self.calls = 0                  # predictor calls made (the tests read it)
        self._loop: asyncio.AbstractEventLoop | None = None

    def _bind(self) -> None:
        """State belongs to the running event loop (a test client may start a new loop per request)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._waiting: deque[_Waiting] = deque()
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._run())

    async def submit(self, items: list[Any], options: Hashable = ()) -> list[Any]:
        """The results for ``items`` (one each) from a predictor call that may include other requests'."""
        self._bind()
        future = self._loop.create_future()
        self._waiting.append(_Waiting(list(items), options, future))
        self._wakeup.set()
        return await future

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._task.cancel()
        self._loop = None

    # --- the batching task
    def _ready(self, options: Hashable) -> int:
        return sum(len(w.items) for w in self._waiting if w.options == options)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:
                self._wakeup.clear()
                await self._wakeup.wait()
            first = self._waiting[0]
            deadline = loop.time() + self.max_delay
            while self._ready(first.options) < self.max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except asyncio.TimeoutError:
                    break
            await self._answer(self._take(first.options))

    def _take(self, options: Hashable) -> list[_Waiting]:
        """The oldest waiting requests with ``options``, up to max_batch inputs (the first always)."""
        batch, size, rest = [], 0, deque()
        while self._waiting:
            w = self._waiting.popleft()
            if w.future.done():             # the client went away
                continue
            if w.options == options and (not batch or size + len(w.items) <= self.max_batch):
                batch.append(w)
                size += len(w.items)
            else:
                rest.append(w)
        self._waiting.extendleft(reversed(rest))
        return batch

    async def _call(self, items: list[Any], options: Hashable) -> Sequence[Any]:
        self.calls += 1
        results = await asyncio.get_running_loop().run_in_executor(self.executor, self.fn, items, options)
        if len(results) != len(items):
            raise RuntimeError(f"the predictor returned {len(results)} results for {len(items)} inputs")
        return results

    async def _answer(self, batch: list[_Waiting]) -> None:
        if not batch:
            return
        items = [item for w in batch for item in w.items]
        try:
            results = await self._call(items, batch[0].options)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting requests
            if len(batch) == 1:
                _settle(batch[0].future, exception=exc)
                return
            for w in batch:                 # alone, so that only the bad request fails
                await self._answer([w])
            return
        start = 0
        for w in batch:
            _settle(w.future, result=list(results[start:start + len(w.items)]))
            start += len(w.items)


def _settle(future: asyncio.Future, result: Any = None, exception: BaseException | None = None) -> None:
    if future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)
