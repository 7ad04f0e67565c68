"""Research work on a Ray cluster: connect, share the data once, run tasks, stream results back.

The generic half of ``sweep(..., executor="ray")`` and ``walk_forward(..., executor="ray")``:
this module knows nothing of backtests. A caller hands :func:`run_tasks` a module-level
function, one object every task reads (the bars and the plan: put in Ray's object store once,
read zero-copy by the workers of each node), and the list of task items; results come back as
tasks finish, each passed to a callback, with a progress bar over the work done. A task whose
worker dies (a crashed process, a lost node) is run again up to ``max_retries`` times; an error
the task raises itself is deterministic and reaches the caller at once, as the Celeris error it
was. The single-machine path never imports Ray.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Annotated, Any, ClassVar

from celeris._settings import FrozenConfig, integer, number
from celeris.errors import CelerisError, ConfigError, did_you_mean
from celeris.progress import progress_bar

#: The executors a research call takes by name.
EXECUTORS = ("local", "ray")


class RayTaskError(CelerisError, RuntimeError):
    """A Ray task failed for a reason of the cluster's (its worker died more often than it may
    be retried, a node was lost), not an error of the task's own."""


class RayExecutor(FrozenConfig, kw_only=False):
    """Where and how research tasks run on Ray (frozen; see :class:`celeris._settings.FrozenConfig`).

    Parameters
    ----------
    address
        ``None``: the Ray this process has initialised already, else the cluster Ray finds
        itself (``$RAY_ADDRESS``, else one started on this machine with ``ray start --head``).
        ``"auto"``: that cluster. ``"HOST:PORT"`` (the head's GCS) or ``"ray://HOST:10001"``
        (Ray Client): that cluster. ``"local"``: a Ray started in this process on this machine.
    task_size
        Units of work per task: variants of a sweep, windows of a walk-forward. ``None``: the
        caller's default, about four tasks per CPU of the cluster but no task under ~0.1 s of
        work (each task costs ~1-2 ms of overhead: benchmarks/RESULTS.md).
    max_retries
        Times a task is run again when its worker dies (not when it raises an error).
    num_cpus
        CPUs each task reserves; a task's numba kernels run on that many threads.
    num_gpus
        GPUs each task reserves (a fraction shares one). A sweep whose device resolved to
        ``cuda`` on the driver reserves one per task unless this is set.
    """

    config_label: ClassVar[str] = "Ray executor"

    address: str | None = None
    task_size: Annotated[int | None, integer(ge=1)] = None
    max_retries: Annotated[int, integer(ge=0)] = 3
    num_cpus: Annotated[float, number(gt=0)] = 1.0
    num_gpus: Annotated[float, number(ge=0)] = 0.0


def resolve_executor(executor: str | RayExecutor | None) -> RayExecutor | None:
    """``None`` for the local path (``"local"``, ``None``), else the :class:`RayExecutor`
    (``"ray"`` is ``RayExecutor()``)."""
    if executor is None or isinstance(executor, RayExecutor):
        return executor
    if not isinstance(executor, str):
        raise ConfigError(
            f"executor must be 'local', 'ray' or a RayExecutor, got {type(executor).__name__}"
        )
    if executor not in EXECUTORS:
        raise ConfigError(
            f"unknown executor {executor!r}{did_you_mean(executor, EXECUTORS)}; "
            f"choose {' or '.join(EXECUTORS)} (or pass a RayExecutor)"
        )
    return RayExecutor() if executor == "ray" else None


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            'executor="ray" needs Ray: pip install "celeris[dist]" (or "ray[default]")'
        ) from None
    return ray


def connect(address: str | None = None) -> Any:
    """Connect this process to Ray (once; later calls reuse the connection) and return ``ray``.

    See :class:`RayExecutor` for ``address``. A connection this call opens stays open for the
    next research call; ``ray.shutdown()`` closes it.

    Raises
    ------
    ConfigError
        Ray is not installed, or no cluster answers at ``address`` (the message says how to
        start one).
    """
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports over the network
    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address == "local":
            ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, **quiet)
        else:
            ray.init(address=address or "auto", **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or os.environ.get("RAY_ADDRESS") or "auto"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot reach a Ray cluster at {where!r} ({first}): start one with `ray start "
            "--head` (and `ray start --address HEAD:PORT` on the other machines), or use "
            "address 'local' (--ray local) for a Ray on this machine only"
        ) from None
    return ray


def cluster_cpus(ray: Any) -> float:
    """CPUs of the connected cluster, all nodes together."""
    return float(ray.cluster_resources().get("CPU", 1.0))


def default_tasks(ray: Any, executor: RayExecutor) -> int:
    """How many tasks to cut the work into when ``task_size`` is not given: four per task slot
    of the cluster, so a slow node does not hold the last task alone."""
    return max(1, int(4 * cluster_cpus(ray) // executor.num_cpus))


def _call(fn: Callable[[Any, Any], Any], threads: int, shared: Any, item: Any) -> Any:
    """Run ``fn(shared, item)`` in a worker with ``threads`` numba threads."""
    import numba

    numba.set_num_threads(max(1, min(threads, int(numba.config.NUMBA_NUM_THREADS))))  # type: ignore[attr-defined]
    return fn(shared, item)


def run_tasks(
    fn: Callable[[Any, Any], Any],
    shared: Any,
    items: Sequence[Any],
    on_result: Callable[[int, Any], None],
    *,
    executor: RayExecutor,
    units: Sequence[int] | None = None,
    label: str = "tasks",
    progress: bool = True,
) -> None:
    """Run ``fn(shared, item)`` for every item as Ray tasks; call ``on_result(i, result)`` as
    each finishes (in completion order, not item order).

    ``shared`` is put in the object store once and every task reads that one copy (pass an
    ``ObjectRef`` to reuse what an earlier call put there). ``fn`` must
    be importable by the workers (a module-level function of an installed package) or
    picklable by value. ``units[i]`` is the work of item ``i`` on the progress bar (default 1).

    Raises
    ------
    Exception
        The error a task raised (the first one seen), as the local run raises it; the tasks
        not finished are cancelled.
    RayTaskError
        A task whose worker died more than ``executor.max_retries`` times.
    """
    ray = connect(executor.address)
    sizes = list(units) if units is not None else [1] * len(items)
    if len(sizes) != len(items):
        raise ConfigError(f"units has {len(sizes)} entries for {len(items)} items")
    threads = max(1, int(executor.num_cpus))
    task = ray.remote(_call).options(
        num_cpus=executor.num_cpus,
        num_gpus=executor.num_gpus,
        max_retries=executor.max_retries,
        retry_exceptions=False,  # an error of the task's own would only happen again
        scheduling_strategy="SPREAD",  # over the nodes, not all on the one that holds the data
    )
    # (a caller running several batches over the same data puts it once and passes the ref)
    shared_ref = shared if isinstance(shared, ray.ObjectRef) else ray.put(shared)
    pending = {task.remote(fn, threads, shared_ref, item): i for i, item in enumerate(items)}
    with progress_bar(progress) or nullcontext(None) as bar:
        bar_task = bar.add_task(label, total=sum(sizes)) if bar is not None else None
        try:
            while pending:
                refs = list(pending)
                first, _ = ray.wait(refs, num_returns=1)
                # and every other finished one, so a 10,000-task run waits ~once per batch
                done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                for ref in {*first, *done}:
                    i = pending.pop(ref)
                    on_result(i, _get(ray, ref, i))
                    if bar is not None and bar_task is not None:
                        bar.update(bar_task, advance=sizes[i])
        finally:
            for ref in pending:
                ray.cancel(ref)


def _get(ray: Any, ref: Any, i: int) -> Any:
    """A task's result; its own error raised as it was, a cluster failure as RayTaskError."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None  # as the local run raises it
        raise RayTaskError(f"Ray task {i} failed: {exc}") from None
    except ray.exceptions.RayError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RayTaskError(f"Ray task {i} failed on the cluster: {first}") from None
