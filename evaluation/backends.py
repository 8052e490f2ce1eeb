"""Where sweep tasks run: in this process, in a local process pool, or on a Ray cluster.

A backend runs pure, picklable functions (:func:`evaluation.sweep.compute_oracle`,
:func:`evaluation.sweep.run_job`) and hands their results back to the driver, which alone
writes to the result store. Every backend runs each task single-threaded (torch and the
BLAS/OpenMP pools limited to one thread), so a task computes the same bits wherever it runs.

* ``serial``: in the calling process, one task at a time (the library default).
* ``local``: a process pool (``forkserver`` context) of ``workers`` processes; default
  ``min(cores, tasks)``. No server.
* ``ray``: Ray tasks (one CPU each) on the cluster at ``address``, or on a local Ray instance
  with ``workers`` CPUs when no address is given. Needs the ``[ray]`` extra.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Collection
from concurrent.futures.process import BrokenProcessPool
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
    context.set_forkserver_preload(["evaluation.sweep"])
    return context


class LocalBackend(Backend):
    """A process pool on this machine (``forkserver`` context, single-threaded workers)."""

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        super().__init__(workers)
        self._pool: cf.ProcessPoolExecutor | None = None

    def start(self, tasks: int) -> None:
        if self._pool is None:
            self.parallelism = max(1, min(self.workers or available_cores(), tasks))
            self._pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        device = {DEVICE_ENV: os.environ.get(DEVICE_ENV)}  # now, not when the server started
        return cf.ProcessPoolExecutor(max_workers=self.parallelism, mp_context=_pool_context(),
                                      initializer=init_worker, initargs=(os.getpid(), device))

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future:
        if self._pool is None:
            self.start(self.workers or available_cores())
        assert self._pool is not None
        try:
            return self._pool.submit(fn, *args)
        except BrokenProcessPool:  # a worker died (e.g. killed for memory): start afresh
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            return self._pool.submit(fn, *args)

    def wait(self, handles: Collection[Any]) -> list[Outcome]:
        if not handles:
            raise ValueError("wait() needs at least one pending handle")
        done, _ = cf.wait(handles, return_when=cf.FIRST_COMPLETED)
        outcomes: list[Outcome] = []
        for future in done:
            error = future.exception()
            outcomes.append((future, None if error else future.result(), error))
        return outcomes

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class RayBackend(Backend):
    """Ray tasks (one CPU each) on the cluster at ``address`` or on a local Ray instance."""

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
                ray.init(num_cpus=self.workers or available_cores(), include_dashboard=False,
                         logging_level="WARNING")
            else:  # a remote cluster does not inherit this process's environment
                env = {DEVICE_ENV: os.environ[DEVICE_ENV]} if DEVICE_ENV in os.environ else {}
                ray.init(address=self.address, logging_level="WARNING",
                         runtime_env={"env_vars": env} if env else None)
            self._owns_ray = True
        self.parallelism = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._remote = ray.remote(num_cpus=1)(call_in_worker)

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
