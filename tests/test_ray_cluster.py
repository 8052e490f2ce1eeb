"""Ray on this machine: a local instance and a three-node cluster, all on 127.0.0.1.

Every Ray process these tests start must listen, and talk, on the loopback interface only:
the machine's other addresses are never used. The cluster test runs a sweep across a head
and two worker nodes, kills one worker node mid-sweep, and checks that every job's row is
there exactly once (the jobs of the dead node rerun elsewhere) with the numbers of a serial
run.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter

import pytest

try:
    import ray
    from ray.cluster_utils import Cluster
except ImportError:  # the [ray] extra is optional: these tests skip without it
    ray = None

from evaluation.backends import LOOPBACK, RayBackend, ray_on_loopback
from evaluation.store import ResultStore
from evaluation.sweep import SweepConfig, run_sweep

pytestmark = pytest.mark.skipif(ray is None,
                                reason="needs the [ray] extra (pip install -e '.[ray]')")

NUMBERS = ["hellinger2", "kl", "tv", "best_in_class_hellinger2", "c_apx"]
SWEEP = SweepConfig("ntp_envs/ARLinear-v0", {"misspecification": 0.5}, ("logloss",),
                    (2, 3, 4, 5, 6, 8), seeds=2, population=True, oracle_starts=2)


def inet_sockets() -> list[tuple[str, str, str]]:
    """``(process, local ip, remote ip or "")`` of every IPv4/IPv6 socket that this process
    and its descendants (the Ray processes it started) hold, listening or connected."""
    psutil = pytest.importorskip("psutil")  # ships with Ray (ray/thirdparty_files)
    me = psutil.Process()
    found = []
    for process in [me, *me.children(recursive=True)]:
        try:
            name, connections = process.name(), process.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        found += [(name, c.laddr.ip, c.raddr.ip if c.raddr else "") for c in connections]
    return found


def is_loopback(ip: str) -> bool:
    """Whether ``ip`` is in 127.0.0.0/8 or ::1 (IPv4 addresses mapped to IPv6 included)."""
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def off_loopback(sockets: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """The sockets bound, or connected, to an address outside 127.0.0.0/8 and ::1."""
    return [s for s in sockets if not all(is_loopback(ip) for ip in s[1:] if ip)]


def node_addresses() -> set[str]:
    """The node address of every live Ray node."""
    return {node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]}


def test_local_ray_instance_listens_on_loopback_only(monkeypatch) -> None:
    assert not ray.is_initialized()
    with RayBackend(workers=1) as backend:
        backend.start(1)
        handle = backend.submit(pow, 7, 2)  # a worker process: it listens too
        assert backend.wait([handle]) == [(handle, 49, None)]
        sockets = inet_sockets()
        names = {name for name, _, _ in sockets}
        assert {"gcs_server", "raylet"} <= names, names  # the servers were seen
        assert off_loopback(sockets) == []
        assert node_addresses() == {LOOPBACK}
    assert not ray.is_initialized()


def _busy_worker_node(workers: list, timeout: float = 20.0):  # noqa: ANN202 - ray Node
    """A worker node whose CPU is taken by a task right now (the GCS's view)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        available = ray._private.state.available_resources_per_node()
        for node in workers:
            if available.get(node.node_id, {}).get("CPU", 0.0) == 0.0:  # no key: all taken
                return node
        time.sleep(0.05)
    raise AssertionError("no worker node was busy: the sweep ended too soon to lose a node")


@pytest.mark.slow
def test_sweep_across_a_cluster_survives_losing_a_node(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    assert not ray.is_initialized()
    with ResultStore(tmp_path / "serial.sqlite") as store:
        run_sweep(SWEEP, store, progress=False)
        serial = store.results().set_index("job_key")[NUMBERS]
    with ray_on_loopback():  # every node on 127.0.0.1: no other address is ever used
        cluster = Cluster(initialize_head=True, head_node_args={
            "node_ip_address": LOOPBACK, "num_cpus": 1, "include_dashboard": False})
        workers = [cluster.add_node(node_ip_address=LOOPBACK, num_cpus=1) for _ in range(2)]
    rows: list[dict] = []
    lost: list = []

    def on_row(row: dict) -> None:
        rows.append(row)
        if not lost:  # the first row: kill a worker node that is running a job
            lost.append(_busy_worker_node(workers))
            cluster.remove_node(lost[0], allow_graceful=False)

    try:
        with RayBackend(address=cluster.address) as backend:
            backend.start(1)
            assert backend.parallelism == 3 and len(ray.nodes()) == 3
            assert node_addresses() == {LOOPBACK}
            with ResultStore(tmp_path / "ray.sqlite") as store:
                keys = run_sweep(SWEEP, store, backend=backend, progress=False, on_row=on_row)
            assert lost and len(node_addresses()) == 1 + 1  # the head and one worker left
            assert off_loopback(inet_sockets()) == []
    finally:
        cluster.shutdown()
    assert sorted(Counter(row["job_key"] for row in rows).items()) == \
        sorted((key, 1) for key in keys)  # every job exactly once
    assert all(row["status"] == "ok" for row in rows), [r.get("error") for r in rows]
    with ResultStore(tmp_path / "ray.sqlite") as store:
        on_cluster = store.results().set_index("job_key")[NUMBERS]
    assert len(on_cluster) == len(serial) == 12
    assert on_cluster.sort_index().equals(serial.sort_index())  # bit for bit
