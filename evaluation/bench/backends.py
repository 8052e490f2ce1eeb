"""Where sweep tasks run: in this process, in a local process pool, or on a Ray cluster.

A backend runs pure, picklable functions (:func:`evaluation.bench.sweep.compute_oracle`,
:func:`evaluation.bench.sweep.run_job`) and hands their results back to the driver, which alone
writes to the result store. Every backend runs each task single-threaded (torch and the
BLAS/OpenMP pools limited to one thread), so a task computes the same bits wherever it runs.

* ``serial``: in the calling process, one task at a time (the library default).
* ``local``: a process pool (``forkserver`` context) of ``workers`` processes; default
  ``min(cores, tasks)``. No server. A worker that dies costs at most its own task.
* ``ray``: Ray tasks (one CPU each) on the cluster at ``address``, or on a local Ray instance
  with ``workers`` CPUs, on 127.0.0.1 only and without dashboard, when no address is given.
  A task whose worker or node dies is rerun. Needs the ``[ray]`` extra.
"""

from __future__ import annotations

import concurrent.futures as cf
import ipaddress
import multiprocessing
import os
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Collection, Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, nullcontext
from typing import Any

from agents.base import DEVICE_ENV
from agents.threads import available_cores, single_threaded
from ntp_envs.validation import check_int

MAX_WORKERS = 1024
BACKENDS = ("local", "ray", "serial")
"""Names accepted by :func:`make_backend` (and ``ntp-bench sweep --backend``)."""

Outcome = tuple[Any, Any, BaseException | None]
"""``(handle, value, error)`` of a finished task: ``error`` is None when it returned."""


_WORKER_READY = False


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:  # Linux: state Z is a dead zombie
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _exit_with_driver(driver: int) -> None:
    """Exit this worker once the driver is gone. The driver, not the parent: a forkserver
    worker's parent is the fork server, which itself lives as long as any worker holds its
    liveness pipe, so a driver killed with SIGKILL would leave both behind."""
    while process_alive(driver):
        time.sleep(1.0)
    os._exit(1)


def init_worker(driver: int | None = None, environ: dict[str, str | None] | None = None) -> None:
    """Make this worker process single-threaded for good (pool initializer, Ray tasks) and
    give it the driver's ``environ`` (None values unset): a fork server started before the
    driver set them would pass on its own."""
    global _WORKER_READY
    for name, value in (environ or {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if _WORKER_READY:
        return
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(limits=1)
    if driver is not None:
        threading.Thread(target=_exit_with_driver, args=(driver,), daemon=True).start()
    _WORKER_READY = True


def call_in_worker(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a worker made single-threaded first (what Ray tasks run)."""
    init_worker()
    return fn(*args)


class Backend(ABC):
    """Runs submitted tasks and reports them as they finish; use as a context manager."""

    name: str = ""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = None if workers is None else check_int("workers", workers, 1, MAX_WORKERS)
        self.parallelism = 1

    def start(self, tasks: int) -> None:
        """Get ready to run up to ``tasks`` tasks (sizes pools; idempotent)."""
        self.parallelism = 1

    @abstractmethod
    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Queue ``fn(*args)``; returns a hashable handle."""

    @abstractmethod
    def wait(self, handles: Collection[Any]) -> list[Outcome]:
        """Block until at least one of ``handles`` has finished; return the finished ones."""

    def close(self) -> None:
        """Release workers (a no-op for backends that hold none)."""
        return None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SerialBackend(Backend):
    """Runs each task in this process when it is waited for, first submitted first."""

    name = "serial"

    def __init__(self, workers: int | None = None) -> None:
        super().__init__(workers)
        if self.workers not in (None, 1):
            raise ValueError(f"workers must be 1 for the serial backend, got {workers}")
        self._queue: deque[tuple[int, Callable[..., Any], tuple[Any, ...]]] = deque()
        self._next = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> int:
        self._next += 1
        self._queue.append((self._next, fn, args))
        return self._next

    def wait(self, handles: Collection[Any]) -> list[Outcome]:
        wanted = set(handles)
        for position, (handle, fn, args) in enumerate(self._queue):
            if handle in wanted:
                del self._queue[position]
                try:
                    with single_threaded():
                        return [(handle, fn(*args), None)]
                except Exception as err:  # noqa: BLE001 - reported to the driver
                    return [(handle, None, err)]
        raise ValueError("wait() needs at least one pending handle")


def _pool_context() -> multiprocessing.context.BaseContext:
    """``forkserver`` with the sweep modules preloaded (workers fork from a process that
    imported them once, never from the driver); ``spawn`` where there is no forkserver."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["evaluation.bench.sweep"])
    return context


_STARTED: Any = None  # in a pool worker: the queue on which it announces each task it starts


def _init_pool_worker(driver: int, environ: dict[str, str | None], started: Any) -> None:
    """Pool initializer: :func:`init_worker`, and remember the pool's ``started`` queue."""
    global _STARTED
    init_worker(driver, environ)
    _STARTED = started


def _run_announced(token: int, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a pool worker, announcing ``token`` on the pool's queue first."""
    if _STARTED is not None:
        _STARTED.put(token)
    return fn(*args)


class _Pool:
    """A process pool, and the queue on which its workers announce the tasks they start."""

    def __init__(self, workers: int) -> None:
        context = _pool_context()
        device = {DEVICE_ENV: os.environ.get(DEVICE_ENV)}  # now, not when the server started
        self.started_queue = context.SimpleQueue()
        self.started: set[int] = set()
        self.broken = self.closed = False
        self.executor = cf.ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_init_pool_worker,
            initargs=(os.getpid(), device, self.started_queue))

    def drain(self) -> None:
        """Move the announcements waiting on the queue into :attr:`started` (keeps the pipe
        from filling up)."""
        while not self.started_queue.empty():
            self.started.add(self.started_queue.get())

    def is_broken(self) -> bool:
        """Whether a worker died and took the pool down (a dead pool refuses new work)."""
        if not self.broken:
            try:
                self.executor.submit(int).cancel()
            except BrokenProcessPool:
                self.broken = True
        return self.broken

    def shutdown(self, wait: bool) -> None:
        """Stop the pool (after its last announcements were read, when ``wait``)."""
        if self.closed:
            return
        self.closed = True
        self.executor.shutdown(wait=wait, cancel_futures=True)
        if wait:
            self.drain()
        self.started_queue.close()


class _Task:
    """A handle of :class:`LocalBackend`: one task, wherever it currently runs."""

    __slots__ = ("args", "error", "fn", "future", "pool", "settled", "suspect", "token", "value")

    def __init__(self, token: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.token, self.fn, self.args = token, fn, args
        self.future: cf.Future | None = None
        self.pool: _Pool | None = None
        self.suspect = False  # was running when a worker died: reruns alone, once
        self.settled = False
        self.value: Any = None
        self.error: BaseException | None = None

    def settle(self, value: Any, error: BaseException | None) -> None:
        self.settled, self.value, self.error = True, value, error


MAX_FRUITLESS_RESTARTS = 3
"""Pool restarts in a row with no task finishing before :class:`LocalBackend` gives up."""


class LocalBackend(Backend):
    """A process pool on this machine (``forkserver`` context, single-threaded workers).

    A worker that dies (``kill -9``, the out-of-memory killer, a crash in native code) takes
    the whole pool down with it. The backend then starts a fresh pool and resubmits every
    unfinished task; those that were running when the worker died (one of them killed it,
    the pool cannot tell which) are rerun once, each on its own in a one-worker pool. Only a
    task whose worker dies there too fails (``BrokenProcessPool``); every other task
    completes as if nothing had happened.
    """

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        super().__init__(workers)
        self._pool: _Pool | None = None
        self._alone: _Pool | None = None  # runs suspects one at a time
        self._tasks: dict[int, _Task] = {}  # submitted, not yet reported, by token
        self._next = 0
        self._fruitless = 0  # pool restarts since a task last finished
        self._started = False

    def start(self, tasks: int) -> None:
        if not self._started:
            self.parallelism = max(1, min(self.workers or available_cores(), tasks))
            self._pool = _Pool(self.parallelism)
            self._started = True

    def submit(self, fn: Callable[..., Any], *args: Any) -> _Task:
        if not self._started:
            self.start(self.workers or available_cores())
        self._next += 1
        task = _Task(self._next, fn, args)
        self._tasks[task.token] = task
        self._dispatch(task)
        return task

    def _dispatch(self, task: _Task) -> None:
        """Submit ``task`` to the main pool, or alone to the one-worker pool if a suspect."""
        while True:
            if task.suspect:
                self._alone = self._alone or _Pool(1)
                pool = self._alone
            else:
                self._pool = self._pool or _Pool(self.parallelism)
                pool = self._pool
            try:
                task.future = pool.executor.submit(_run_announced, task.token, task.fn,
                                                   *task.args)
            except BrokenProcessPool:
                pool.broken = True
                self._recover(pool)
                if task.settled:
                    return
                continue
            task.pool = pool
            return

    def _recover(self, pool: _Pool) -> None:
        """Replace the broken ``pool`` and resubmit its unfinished tasks (see the class)."""
        if pool is self._pool:
            self._pool = None
        if pool is self._alone:
            self._alone = None
        pool.shutdown(wait=True)  # every one of its futures is done after this
        self._fruitless += 1
        victims = [t for t in self._tasks.values() if t.pool is pool and not t.settled
                   and t.future is not None and t.future.done()
                   and isinstance(t.future.exception(), BrokenProcessPool)]
        for task in victims:
            task.pool, task.future = None, None
        for task in victims:
            if task.token in pool.started and task.suspect:  # died again, alone: its fault
                task.settle(None, BrokenProcessPool(
                    "its worker process died while running it, twice (the second time "
                    "alone): killed (e.g. by the out-of-memory killer) or crashed"))
                self._fruitless = 0
            elif self._fruitless > MAX_FRUITLESS_RESTARTS:
                task.settle(None, BrokenProcessPool(
                    f"the process pool broke {self._fruitless} times in a row with no task "
                    "finishing (workers die on start?)"))
            else:
                task.suspect = task.suspect or task.token in pool.started
                self._dispatch(task)

    def wait(self, handles: Collection[Any]) -> list[Outcome]:
        if not handles:
            raise ValueError("wait() needs at least one pending handle")
        tasks = list(handles)
        while True:
            for pool in (self._pool, self._alone):
                if pool is not None:
                    pool.drain()
            settled = [t for t in tasks if t.settled]
            if settled:
                for task in settled:
                    self._tasks.pop(task.token, None)
                if self._alone is not None and not any(
                        t.pool is self._alone for t in self._tasks.values()):
                    self._alone.shutdown(wait=False)
                    self._alone = None
                return [(t, t.value, t.error) for t in settled]
            by_future = {t.future: t for t in tasks}
            done, _ = cf.wait(by_future, return_when=cf.FIRST_COMPLETED)
            for future in done:
                task = by_future[future]
                if task.future is not future:  # resubmitted by a recovery in this loop
                    continue
                error = future.exception()
                if (isinstance(error, BrokenProcessPool) and task.pool is not None
                        and task.pool.is_broken()):
                    self._recover(task.pool)
                else:
                    task.settle(None if error else future.result(), error)
                    self._fruitless = 0

    def close(self) -> None:
        for pool in (self._pool, self._alone):
            if pool is not None:
                pool.shutdown(wait=True)
        self._pool = self._alone = None
        self._tasks.clear()
        self._started = False


LOOPBACK = "127.0.0.1"
RAY_TASK_RETRIES = 3
"""How often Ray reruns a task whose worker process or node died (not one that raised)."""
RAY_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def is_loopback_address(address: str) -> bool:
    """Whether ``address`` (``host:port``, ``host``) names this machine's loopback interface."""
    host = address.strip()
    if host.startswith("["):  # [::1]:6379
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:  # 127.0.0.1:6379 (a bare IPv6 address has more colons)
        host = host.split(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextmanager
def ray_on_loopback() -> Iterator[None]:
    """While Ray starts or connects: keep a loopback address (127.0.0.1, localhost) as given.

    Ray 2.60 replaces a loopback node address or cluster address by this host's interface
    address (``ray._private.services.resolve_ip_for_localhost``) unless its single-machine
    switch is on (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read once into
    ``ray._private.ray_constants.ENABLE_RAY_CLUSTER``). This sets both, for this process and
    the Ray processes started meanwhile, and restores them afterwards.
    """
    from ray._private import ray_constants

    flag, env = ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(RAY_SINGLE_MACHINE_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ[RAY_SINGLE_MACHINE_ENV] = "0"
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = flag
        if env is None:
            os.environ.pop(RAY_SINGLE_MACHINE_ENV, None)
        else:
            os.environ[RAY_SINGLE_MACHINE_ENV] = env


class RayBackend(Backend):
    """Ray tasks (one CPU each) on the cluster at ``address`` or on a local Ray instance
    (127.0.0.1 only, no dashboard); tasks are rerun on node or worker death."""

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        super().__init__(workers)
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ValueError(f"address must be a non-empty string (host:port or 'auto'), "
                             f"got {address!r}")
        if address is not None and workers is not None:
            raise ValueError("workers applies to a local Ray instance only: the cluster at "
                             "address decides its own size")
        try:
            import ray
        except ImportError:
            raise ValueError("backend 'ray' needs Ray: pip install -c constraints.txt "
                             "-e '.[ray]'") from None
        self._ray = ray
        self.address = address
        self._owns_ray = False
        self._remote: Any = None

    def start(self, tasks: int) -> None:
        if self._remote is not None:
            return
        ray = self._ray
        if not ray.is_initialized():
            if self.address is None:
                with ray_on_loopback():
                    ray.init(num_cpus=self.workers or available_cores(),
                             _node_ip_address=LOOPBACK, include_dashboard=False,
                             logging_level="WARNING")
            else:  # a remote cluster does not inherit this process's environment
                env = {DEVICE_ENV: os.environ[DEVICE_ENV]} if DEVICE_ENV in os.environ else {}
                with ray_on_loopback() if is_loopback_address(self.address) else nullcontext():
                    ray.init(address=self.address, logging_level="WARNING",
                             runtime_env={"env_vars": env} if env else None)
            self._owns_ray = True
        self.parallelism = max(1, int(ray.cluster_resources().get("CPU", 1)))
        # a task whose worker or node dies is rerun elsewhere (an error it raises is not)
        self._remote = ray.remote(num_cpus=1, max_retries=RAY_TASK_RETRIES)(call_in_worker)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._remote is None:
            self.start(1)
        return self._remote.remote(fn, *args)

    def wait(self, handles: Collection[Any]) -> list[Outcome]:
        if not handles:
            raise ValueError("wait() needs at least one pending handle")
        ready, _ = self._ray.wait(list(handles), num_returns=1)
        outcomes: list[Outcome] = []
        for ref in ready:
            try:
                outcomes.append((ref, self._ray.get(ref), None))
            except Exception as err:  # noqa: BLE001 - a task error, reported to the driver
                outcomes.append((ref, None, getattr(err, "cause", None) or err))
        return outcomes

    def close(self) -> None:
        if self._owns_ray:
            self._ray.shutdown()
            self._owns_ray = False
        self._remote = None


def make_backend(
    name: str, workers: int | None = None, address: str | None = None
) -> Backend:
    """The backend called ``name`` (one of :data:`BACKENDS`); ValueError otherwise."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {name!r}")
    if address is not None and name != "ray":
        raise ValueError(f"address applies to the ray backend only, not {name!r}")
    if name == "ray":
        return RayBackend(workers, address)
    if name == "local":
        return LocalBackend(workers)
    return SerialBackend(workers)


__all__ = ["BACKENDS", "MAX_WORKERS", "Backend", "LocalBackend", "RayBackend", "SerialBackend",
           "available_cores", "make_backend", "single_threaded"]
