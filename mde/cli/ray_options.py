"""The options that run ``mde embed``, ``mde index`` and ``mde prepare`` on Ray, and the connection they share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

from mde.cli.console import err
from mde.errors import MdeError

RAY_HELP = ("Run on Ray (the 'ray' extra) on a pool of actors, each decoding its files and running one model session "
            "(with --device cuda decoding runs as CPU tasks feeding GPU actors); the same outputs as without it. "
            "Without --ray-address a local Ray instance is started for the command.")
RAY_ADDRESS_HELP = "With --ray: the head of an existing Ray cluster (HOST:PORT, or auto); implies --ray."
ACTORS_HELP = ("With --ray: actors, each with one model session and --threads CPUs (default 1). Default: as many as "
               "the cluster's CPUs hold; with --device cuda one (a GPU each), and a CPU must stay free for decoding.")


@contextmanager
def ray_connected(on_ray: bool, address: Optional[str], purpose: str, actors: Optional[int] = None,
                  threads: Optional[int] = None, device: str = "cpu", actor_pool: bool = True) -> Iterator[None]:
    """With ``on_ray``: Ray connected (``address``, or a local instance) for the block, before any progress
    bar, with ``actor_pool`` its capacity checked for ``actors`` actors (None: the default pool) of ``threads``
    CPUs on ``device``, and said in one line;
    the commands' Ray runs then use this connection. Without: nothing."""
    if not on_ray:
        yield
        return
    from mde.cluster.pipeline import check_capacity, pool_size
    from mde.cluster.session import ray_session

    with ray_session(address, purpose) as ray:
        said = ""
        if actor_pool:
            pool = actors or pool_size(ray, threads or 1, device)
            check_capacity(ray, pool, threads or 1, device)
            said = f", {pool} actor(s) of {threads or 1} thread(s)"
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        err.print(f"on {where}: {ray.cluster_resources().get('CPU', 0):g} CPUs, {len(ray.nodes())} node(s){said}")
        yield


def ray_requested(ray: bool, address: Optional[str], workers: int, actors: Optional[int]) -> bool:
    """Whether the command runs on Ray (--ray, or --ray-address alone); MdeError for --workers with it, or
    --actors without it."""
    on_ray = ray or address is not None
    if on_ray and workers > 1:
        raise MdeError("--workers is for the local batch; on Ray use --actors")
    if actors is not None and not on_ray:
        raise MdeError("--actors applies with --ray")
    return on_ray
