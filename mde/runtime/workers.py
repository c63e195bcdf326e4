"""Running a function over jobs in worker processes that never outlive the batch that started them, or in
threads of this process (:func:`thread_map`).

Workers are spawned (not forked). Each one dies with its parent, even when the parent is SIGKILLed:
on Linux the kernel sends it SIGKILL (``PR_SET_PDEATHSIG``), and everywhere a thread polls the parent's
pid as a fallback. Workers ignore SIGINT: Ctrl-C is the parent's to handle. When the consumer stops
early (an exception, Ctrl-C, SIGTERM turned into an exception, or closing the generator), jobs not yet
started are cancelled and running workers are sent SIGTERM at once rather than finishing the batch; a
worker in the middle of a job unwinds it (so ``finally`` blocks remove temporary files) and exits. With
no worker left, multiprocessing's resource tracker sees its pipe close and exits as well.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Optional, TypeVar

J = TypeVar("J")
R = TypeVar("R")

PARENT_POLL_S = 0.5
"""How often (seconds) a worker checks that its parent is alive, where the kernel cannot tell it."""
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_JOIN_S = 5.0
_busy = False  # in a worker: whether a job is running (SIGTERM then unwinds it before exiting)


class _Stopped(BaseException):
    """Raised in a worker's running job by SIGTERM."""


def process_map(
    fn: Callable[[J], R],
    jobs: Iterable[J],
    workers: int,
    initializer: Callable[..., None],
    initargs: tuple[Any, ...],
) -> Iterator[R]:
    """``fn(job)`` for every job, in job order, computed by ``workers`` spawned processes, each set up
    once by ``initializer(*initargs)``. A job's exception is raised here, in order."""
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, context, _start_worker, (os.getpid(), initializer, initargs))
    try:
        futures = [pool.submit(_call, fn, job) for job in jobs]
        for future in futures:
            yield future.result()
    except BaseException:
        _terminate(pool)
        raise
    finally:
        pool.shutdown(wait=True)


AHEAD_PER_THREAD = 2
"""Jobs :func:`thread_map` keeps submitted per thread beyond the one being consumed (bounds memory)."""


def thread_map(fn: Callable[[J], R], jobs: Iterable[J], threads: int,
               weigh: Optional[Callable[[J], int]] = None, budget: int = 0) -> Iterator[R]:
    """``fn(job)`` for every job, in job order, computed by ``threads`` threads of this process, at most
    AHEAD_PER_THREAD x ``threads`` jobs ahead of the consumer (so that memory does not grow with the
    batch). For work that releases the GIL (decoding, the C front end, ONNX Runtime). A job's exception
    is raised here, in order. When the consumer stops early (an exception, or closing the generator) the
    jobs not started are dropped and the running ones are waited for before this generator ends.

    weigh, budget: with both, a job weighing ``weigh(job)`` (say, bytes) is handed out only while the jobs
    handed out and not yet consumed weigh at most ``budget`` with it, or when none is out (so one that
    alone exceeds the budget runs alone): a batch of long files never holds more than one at a time.
    """
    limit_malloc_arenas()
    source = iter(jobs)
    held: Optional[tuple[J, int]] = None  # the next job and its weight, drawn but not handed out yet
    pending: deque[tuple[Future[R], int]] = deque()
    load = 0
    with ThreadPoolExecutor(threads, thread_name_prefix="mde-job") as pool:

        def hand_out() -> None:
            nonlocal held, load
            while len(pending) < AHEAD_PER_THREAD * threads:
                if held is None:
                    drawn = _take(source, 1)
                    if not drawn:
                        return
                    held = (drawn[0], weigh(drawn[0]) if weigh is not None and budget else 0)
                job, weight = held
                if pending and load + weight > budget > 0:
                    return
                pending.append((pool.submit(fn, job), weight))
                load, held = load + weight, None

        try:
            hand_out()
            while pending:
                future, weight = pending.popleft()
                result = future.result()
                load -= weight
                hand_out()
                yield result
        finally:
            for future, _ in pending:
                future.cancel()


MALLOC_ARENAS = 2
"""glibc malloc arenas the process keeps once :func:`thread_map` runs (glibc's default, 8 per core, let
each thread's freed buffers linger: FCN29 over 2 threads peaked 45 MB higher, at the same speed)."""
_M_ARENA_MAX = -8  # from <malloc.h>


def limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas at MALLOC_ARENAS for this process, unless MALLOC_ARENA_MAX is set (the
    user's choice) or the C library is not glibc."""
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, MALLOC_ARENAS)


def ordered_map(fn: Callable[[J], R], jobs: Iterable[J], threads: int,
                weigh: Optional[Callable[[J], int]] = None, budget: int = 0) -> Generator[R, None, None]:
    """``fn(job)`` for every job, in job order: by :func:`thread_map` (``weigh`` and ``budget`` as there)
    with more than one thread, else here, in the caller's thread (where Ctrl-C interrupts the running job
    itself). Close it to stop early."""
    if threads > 1:
        yield from thread_map(fn, jobs, threads, weigh, budget)
    else:
        yield from map(fn, jobs)


def _take(source: Iterator[J], n: int) -> list[J]:
    """The next ``n`` items of ``source`` (fewer at its end)."""
    taken = []
    for item in source:
        taken.append(item)
        if len(taken) == n:
            break
    return taken


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Cancel the jobs not started and end the running workers now. ProcessPoolExecutor offers no
    public way before Python 3.14 (``terminate_workers``), hence its process table. The pool's manager
    thread is joined too: ``shutdown(wait=False)`` forgets it, and if it were still closing its wake-up
    pipe at interpreter exit, Python 3.11's exit handler would write to that pipe ("Bad file descriptor")."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(_JOIN_S)
    if manager is not None:
        manager.join(_JOIN_S)


def _start_worker(parent_pid: int, initializer: Callable[..., None], initargs: tuple[Any, ...]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    die_with_parent(parent_pid)
    initializer(*initargs)


def _call(fn: Callable[[J], R], job: J) -> R:
    """Run one job in a worker; SIGTERM during it unwinds the job, then ends the worker."""
    global _busy
    try:
        _busy = True
        return fn(job)
    except _Stopped:
        os._exit(128 + signal.SIGTERM)
    finally:
        _busy = False


def _on_sigterm(signum: int, frame: object) -> None:
    if _busy:
        raise _Stopped
    os._exit(128 + signum)


def die_with_parent(parent_pid: int) -> None:
    """Make this process exit when process ``parent_pid``, its parent, exits in any way."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # no prctl in this libc: the thread below notices
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="mde-parent-watch", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    os._exit(1)
