"""Dynamic batching: concurrent requests gathered into one onnxruntime call.

Each request's inputs are decoded and checked before they queue (mitp.serve.model), so a batch holds only
good rows: a bad element fails its own request, never the batch it would have joined. A request holds its
rows of the batcher's capacity (`max_queue`) from before it is decoded until it is answered (`admitted`):
past it a request is refused at once (`Overloaded`), before any work is spent on it, so the memory of
decoded and queued pixels stays bounded and a client learns to back off instead of waiting. The batcher takes
whole requests from the front of a bounded queue until the batch holds `max_batch_size` rows or the oldest
request has waited `max_delay` seconds (as Triton's max_queue_delay), runs them as one call in a worker
thread of its own, and hands each request its rows back.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

Run = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (pixels, ids, mask) -> logits (B, K)
Observe = Callable[[float, int, float], None]  # (seconds queued, batch rows, seconds in the model)


class Overloaded(Exception):
    """The queue is full: the request was not queued (HTTP 503, with Retry-After)."""


@dataclass
class _Request:
    pixels: np.ndarray  # (n, 3, H, W) float32
    ids: np.ndarray  # (n, 77) int64: the tokenizer pads every caption to the context length
    mask: np.ndarray  # (n, 77) int64
    future: asyncio.Future[np.ndarray]
    queued_at: float = field(default_factory=time.monotonic)

    @property
    def rows(self) -> int:
        return len(self.pixels)


class DynamicBatcher:
    """One queue and one model call at a time for one served model; start() on the serving event loop."""

    def __init__(self, run: Run, max_batch_size: int = 32, max_delay: float = 0.005, max_queue: int = 256, observe: Observe | None = None):
        if max_batch_size < 1 or max_queue < max_batch_size or max_delay < 0:
            raise ValueError("need max_batch_size >= 1, max_queue >= max_batch_size and max_delay >= 0")
        self.run, self.observe = run, observe
        self.max_batch_size, self.max_delay, self.max_queue = max_batch_size, max_delay, max_queue
        self._queue: deque[_Request] = deque()
        self._queued_rows = 0  # rows waiting to join a batch
        self._held_rows = 0  # rows admitted and not yet answered: decoding, queued or running
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="mitp-infer")  # never behind a decode
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._serve(), name="mitp-batcher")

    async def stop(self) -> None:
        """Stop after the requests already queued have their answers."""
        while self._queue:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.close()

    def close(self) -> None:
        """Let the process exit: a model call still running finishes, none starts."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    @contextmanager
    def admitted(self, rows: int) -> Iterator[None]:
        """Hold `rows` of the capacity for one request, from before its decoding until its answer; Overloaded
        at once when they are not free."""
        if self._held_rows + rows > self.max_queue:
            raise Overloaded(f"the server is at capacity ({self._held_rows} of {self.max_queue} rows in progress): retry shortly")
        self._held_rows += rows
        try:
            yield
        finally:
            self._held_rows -= rows

    async def infer(self, pixels: np.ndarray, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The logits (n, K) of one admitted request's n rows, computed in a batch with whatever else is queued."""
        if self._task is None:
            raise RuntimeError("the batcher is not started")
        request = _Request(pixels, ids, mask, asyncio.get_running_loop().create_future())
        self._queue.append(request)
        self._queued_rows += request.rows
        self._arrived.set()
        return await request.future

    async def _serve(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            while self._queue:
                await self._gather()
                await self._run(self._take())

    async def _gather(self) -> None:
        """Wait for more rows until a batch is full or the oldest request has waited max_delay."""
        deadline = self._queue[0].queued_at + self.max_delay
        while self._queued_rows < self.max_batch_size and (left := deadline - time.monotonic()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                break

    def _take(self) -> list[_Request]:
        """Whole requests from the front, up to max_batch_size rows (a larger request runs alone)."""
        batch = [self._queue.popleft()]
        rows = batch[0].rows
        while self._queue and rows + self._queue[0].rows <= self.max_batch_size:
            rows += self._queue[0].rows
            batch.append(self._queue.popleft())
        self._queued_rows -= rows
        return batch

    async def _run(self, batch: list[_Request]) -> None:
        started = time.monotonic()
        pixels = np.concatenate([r.pixels for r in batch])  # (B, 3, H, W)
        ids, mask = np.concatenate([r.ids for r in batch]), np.concatenate([r.mask for r in batch])  # (B, 77) each
        try:
            logits = await asyncio.get_running_loop().run_in_executor(self._executor, self.run, pixels, ids, mask)  # (B, K)
        except Exception as err:  # the model failed (not the input: that was checked before queueing)
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(err)
            return
        if self.observe is not None:
            self.observe(started - batch[0].queued_at, len(pixels), time.monotonic() - started)
        offset = 0
        for request in batch:
            if not request.future.done():  # a client that went away cancelled its future
                request.future.set_result(logits[offset : offset + request.rows])
            offset += request.rows

