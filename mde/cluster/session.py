"""Connecting to Ray: an existing cluster (``--ray-address``) or a local instance that lives as long as the
command (started in this process, shut down at the end, whatever way the command ends)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

from mde.errors import MdeError, MissingExtraError

RAY_EXTRA = "ray"
LOCAL_OBJECT_STORE_BYTES = 512 * 2**20
"""Object store of a local instance: decoded clips travel through it one block at a time, so a small one
suffices (Ray's default takes 30 % of the machine's memory)."""


def import_ray(purpose: str) -> Any:
    """The ``ray`` module with Ray Data; MissingExtraError naming the ``ray`` extra when it is not installed."""
    try:
        import ray
        import ray.data  # (Ray Data is part of the extra: ray[data,train])
    except ImportError:
        raise MissingExtraError("ray", RAY_EXTRA, purpose) from None
    return ray


def local_cpus() -> int:
    """The CPUs this process may run on (its affinity), which a local instance offers to Ray."""
    return len(os.sched_getaffinity(0))


@contextmanager
def ray_session(address: Optional[str], purpose: str) -> Iterator[Any]:
    """Ray connected for the block: to the cluster at ``address`` ('HOST:PORT' of its head, or 'auto'), or,
    with None, to a local instance started here with this process's CPUs and shut down when the block ends
    (an existing connection is used as it is and left open). Yields the ``ray`` module. Ray's own progress
    bars and its logs below errors are turned off: the command shows its own progress. MdeError (one line) when the
    cluster cannot be reached."""
    ray = import_ray(purpose)
    started = False
    if not ray.is_initialized():
        options: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False,
                                   "include_dashboard": False}
        if address is not None:
            _check_reachable(address)
        if address is None:  # 'local': a new instance even when a cluster started on this machine is running
            options.update(num_cpus=local_cpus(), object_store_memory=LOCAL_OBJECT_STORE_BYTES)
        try:
            ray.init(address=address or "local", **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise MdeError(f"cannot connect to the Ray cluster at {address}: {first_line(exc)}") from None
        started = True
    for name in ("ray", "ray.data"):  # Ray Data sets its own logger's level when first used
        logging.getLogger(name).setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 300 characters), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


REACH_TIMEOUT_S = 5.0


def _check_reachable(address: str) -> None:
    """MdeError (one line) unless something listens at HOST:PORT ``address`` (Ray itself would keep retrying
    an unreachable head for minutes); other forms ('auto', 'ray://...') are left to Ray."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "/" in address:
        return
    try:
        socket.create_connection((host, int(port)), timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        raise MdeError(f"cannot connect to the Ray cluster at {address}: {exc.strerror or exc}") from None
