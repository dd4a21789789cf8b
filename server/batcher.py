"""An asyncio dynamic batcher in front of ONE worker thread.

Why: an RL trainer sends many small concurrent requests (one per completion, or one per group of
G students); the model is much faster on one batch than on many single calls, and it is not
thread-safe. So requests are queued as *jobs*; a single loop waits ``window_s`` after the first
queued job for more (or until ``max_batch`` items are queued), then hands all of them to
``run(jobs)`` on a single-thread executor and resolves each job's future with its own outcome.

* The window is measured from the *first* job's arrival: when the worker was busy, the queue
  filled meanwhile and the next batch leaves at once.
* ``expect_more()`` (optional) says whether more jobs are on their way (e.g. requests still
  being received); when it says no, the batch leaves without waiting out the window, so a lone
  client does not pay the window on every call.
* The queue is bounded in items: ``submit`` raises ``QueueFull`` instead of growing without end.
* A job whose caller gave up (timeout, disconnect) is dropped from the queue, and a result
  arriving for it after it was cancelled is discarded.

Example::

    >>> import asyncio
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> from server.batcher import DynamicBatcher
    >>> seen = []
    >>> def run(jobs):
    ...     seen.append(len(jobs))
    ...     return [j.payload * 2 for j in jobs]
    >>> async def main():
    ...     b = DynamicBatcher(run, ThreadPoolExecutor(1), window_s=0.05, max_batch=8,
    ...                        max_queue=16)
    ...     b.start()
    ...     outs = await asyncio.gather(*(b.submit("x", i, 1).future for i in range(3)))
    ...     await b.stop()
    ...     return outs
    >>> asyncio.run(main()), seen
    ([0, 2, 4], [3])
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any

from server.errors import QueueFull, ShuttingDown

log = logging.getLogger("gsrm.server")


@dataclass(eq=False)
class Job:
    """One request's work: ``kind`` picks the handler, ``size`` counts its items."""

    kind: str
    payload: Any
    size: int
    future: asyncio.Future[Any]
    arrived: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


RunFn = Callable[[Sequence[Job]], Sequence[Any]]


class WorkerThread(Executor):
    """A one-thread executor whose thread is a daemon: it never holds the process open.

    Why not ``ThreadPoolExecutor(1)``: the interpreter joins its (non-daemon) worker at exit,
    so a server told to stop while a long model batch runs would exit only when the batch
    ends, whatever ``--graceful-timeout-s`` says. The batch's requests have been answered
    (503) by then; nobody waits for its result.
    """

    def __init__(self, name: str = "gsrm-worker") -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._closed:
            raise RuntimeError("cannot submit to a worker that was shut down")
        fut: Future[Any] = Future()
        self._queue.put((fut, fn, args, kwargs))
        return fut

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fut, fn, args, kwargs = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - delivered to the caller
                fut.set_exception(exc)
            else:
                fut.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        self._queue.put(None)
        if wait:
            self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


class DynamicBatcher:
    """Collects jobs into batches and runs them one batch at a time on ``executor``.

    ``run(jobs)`` is called in the executor's thread and returns one outcome per job: a result,
    or an exception instance (which the job's future then raises).
    """

    def __init__(self, run: RunFn, executor: Executor, window_s: float, max_batch: int,
                 max_queue: int, retry_after: int = 1,
                 expect_more: Callable[[], bool] | None = None) -> None:
        self._run = run
        self._expect_more = expect_more
        self._executor = executor
        self.window_s = window_s
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.retry_after = retry_after
        self._pending: collections.deque[Job] = collections.deque()
        self.queued = 0  # items waiting (not counting the batch being run)
        self.in_flight = 0  # items in the batch being run
        self._running: list[Job] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="gsrm-batcher")

    async def stop(self, drain_timeout: float = 0.0) -> None:
        """Refuse new jobs, let queued ones run for up to ``drain_timeout`` s, fail the rest.

        Only jobs someone still waits for are waited for: behind uvicorn, which has already
        spent the graceful timeout on the open requests (and cancelled the rest) when the
        app's shutdown runs, a batch left running for cancelled requests is not waited out
        a second time (that doubled the time to exit).
        """
        self._closed = True
        if drain_timeout > 0:
            loop = asyncio.get_running_loop()
            end = loop.time() + drain_timeout
            while self.awaited_jobs and loop.time() < end:
                await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        err = ShuttingDown("the server is shutting down", retry_after=self.retry_after)
        for job in [*self._running, *self._pending]:
            if not job.future.done():
                job.future.set_exception(err)
        self._pending.clear()
        self._running = []
        self.queued = self.in_flight = 0

    @property
    def awaited_jobs(self) -> int:
        """Jobs queued or running whose caller still waits for the answer."""
        return sum(not j.future.done() for j in (*self._running, *self._pending))

    @property
    def open_jobs(self) -> int:
        """Jobs queued or running (each one is a request waiting for its answer)."""
        return len(self._pending) + len(self._running)

    # ------------------------------------------------------------------ submitting
    def submit(self, kind: str, payload: Any, size: int) -> Job:
        """Queue a job (``size`` items); raises QueueFull / ShuttingDown (503) at once."""
        if self._closed or self._task is None:
            raise ShuttingDown("the server is shutting down", retry_after=self.retry_after)
        if self.queued + size > self.max_queue:
            raise QueueFull(
                f"queue is full ({self.queued} of {self.max_queue} items waiting, this request "
                f"has {size}); retry later", retry_after=self.retry_after)
        loop = asyncio.get_running_loop()
        job = Job(kind=kind, payload=payload, size=size, future=loop.create_future(),
                  arrived=loop.time())
        self._pending.append(job)
        self.queued += size
        assert self._wakeup is not None
        self._wakeup.set()
        return job

    def cancel(self, job: Job) -> None:
        """The caller gave up: drop the job if still queued; ignore its result otherwise."""
        if not job.future.done():
            job.future.cancel()
        try:
            self._pending.remove(job)
        except ValueError:
            return
        self.queued -= job.size

    # ------------------------------------------------------------------ the loop
    async def _wait(self, timeout: float | None) -> bool:
        assert self._wakeup is not None
        self._wakeup.clear()
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def _take(self) -> list[Job]:
        batch: list[Job] = []
        n = 0
        while self._pending:
            job = self._pending[0]
            if batch and n + job.size > self.max_batch:
                break
            self._pending.popleft()
            self.queued -= job.size
            if job.future.done():  # cancelled while queued
                continue
            batch.append(job)
            n += job.size
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                await self._wait(None)
            # wait for more work until the first job's window closes or the batch is full
            while self._pending and self.queued < self.max_batch:
                if self._expect_more is not None and not self._expect_more():
                    break
                remaining = self._pending[0].arrived + self.window_s - loop.time()
                if remaining <= 0 or not await self._wait(remaining):
                    break
            batch = self._take()
            if not batch:
                continue
            self._running = batch
            self.in_flight = sum(j.size for j in batch)
            try:
                outcomes: Sequence[Any] = await loop.run_in_executor(self._executor, self._run,
                                                                     batch)
                if len(outcomes) != len(batch):
                    raise RuntimeError(f"run() returned {len(outcomes)} outcomes for "
                                       f"{len(batch)} jobs")
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # the executor itself failed: every job gets it
                log.exception("batch runner failed")
                outcomes = [exc] * len(batch)
            finally:
                self.in_flight = 0
            self._running = []
            for job, out in zip(batch, outcomes):
                if job.future.done():
                    continue
                if isinstance(out, BaseException):
                    job.future.set_exception(out)
                else:
                    job.future.set_result(out)
