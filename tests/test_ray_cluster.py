"""Ray on this machine: a local instance and a three-node cluster, all on 127.0.0.1.

Every Ray process these tests start must listen, and talk, on the loopback interface only:
the machine's other addresses are never used. The cluster test runs a sweep across a head
and two worker nodes, kills one worker node mid-sweep, and checks that every job's row is
there exactly once (the jobs of the dead node rerun elsewhere) with the numbers of a serial
run.
"""

from __future__ import annotations

import ipaddress
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

try:
    import ray
    from ray.cluster_utils import Cluster
except ImportError:  # the [ray] extra is optional: these tests skip without it
    ray = None

from evaluation.bench.backends import LOOPBACK, RayBackend, ray_on_loopback
from evaluation.bench.store import ResultStore
from evaluation.bench.sweep import SweepConfig, run_sweep

pytestmark = pytest.mark.skipif(ray is None,
                                reason="needs the [ray] extra (pip install -e '.[ray]')")

NUMBERS = ["hellinger2", "kl", "tv", "best_in_class_hellinger2", "c_apx"]
SLOW_AGENT = """
    import os
    import time
    from pathlib import Path

    import ray

    from agents.logloss_bc import LogLossBC


    class SlowLogLoss(LogLossBC):
        \"\"\"LogLossBC that, on a Ray worker, leaves a file named after its node in MARKERS,
        then takes 3 seconds: time enough to kill its node under it.\"\"\"

        def fit(self, task, demonstrations, rng=None):
            if ray.is_initialized():
                node = ray.get_runtime_context().get_node_id()
                Path(MARKERS, f"{node}-{os.getpid()}-{time.time_ns()}").touch()
                time.sleep(3)
            return super().fit(task, demonstrations, rng)
"""


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


def node_addresses() -> list[str]:
    """The node address of every live Ray node."""
    return [node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]]


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
        assert node_addresses() == [LOOPBACK]
    assert not ray.is_initialized()


def kill_a_worker_node_under_a_fit(cluster, markers: Path, lost: list,  # noqa: ANN001
                                   stop: threading.Event) -> None:
    """As soon as a fit has started on one of ``cluster``'s worker nodes (a file in
    ``markers``), kill that node (no graceful stop) and append its id to ``lost``."""
    workers = {node.node_id: node for node in cluster.worker_nodes}
    while not stop.is_set():
        for marker in markers.iterdir():
            node = workers.get(marker.name.split("-")[0])
            if node is not None:
                cluster.remove_node(node, allow_graceful=False)
                lost.append(node.node_id)
                return
        time.sleep(0.05)


@pytest.mark.slow
def test_sweep_across_a_cluster_survives_losing_a_node(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    assert not ray.is_initialized()
    markers = tmp_path / "fits"
    markers.mkdir()
    plugin = tmp_path / "slow.py"
    plugin.write_text(textwrap.dedent(SLOW_AGENT).replace("MARKERS", repr(str(markers))))
    sweep = SweepConfig("ntp_envs/ARLinear-v0", {"misspecification": 0.5},
                        (f"{plugin}:SlowLogLoss",), (2, 3, 4), seeds=2, population=True,
                        oracle_starts=2)
    with ResultStore(tmp_path / "serial.sqlite") as store:  # in this process, no Ray
        run_sweep(sweep, store, progress=False)
        serial = store.results().set_index("job_key")[NUMBERS]
    with ray_on_loopback():  # every node on 127.0.0.1: no other address is ever used
        cluster = Cluster(initialize_head=True, head_node_args={
            "node_ip_address": LOOPBACK, "num_cpus": 1, "include_dashboard": False})
        for _ in range(2):
            cluster.add_node(node_ip_address=LOOPBACK, num_cpus=1)
    rows: list[dict] = []
    lost: list[str] = []
    stop = threading.Event()
    killer = threading.Thread(target=kill_a_worker_node_under_a_fit,
                              args=(cluster, markers, lost, stop))
    try:
        with RayBackend(address=cluster.address) as backend:
            backend.start(1)
            assert backend.parallelism == 3 and node_addresses() == [LOOPBACK] * 3
            killer.start()
            with ResultStore(tmp_path / "ray.sqlite") as store:
                keys = run_sweep(sweep, store, backend=backend, progress=False,
                                 on_row=rows.append)
            stop.set()
            killer.join()
            cluster.wait_for_nodes()  # the GCS has marked the node dead (health checks)
            assert len(lost) == 1 and node_addresses() == [LOOPBACK] * 2
            assert off_loopback(inet_sockets()) == []
    finally:
        stop.set()
        if killer.ident is not None:
            killer.join()
        cluster.shutdown()
    fits = [marker.name.split("-")[0] for marker in markers.iterdir()]
    assert len(fits) == 6 + 1 and fits.count(lost[0]) == 1  # the dead node's fit, rerun
    assert sorted(Counter(row["job_key"] for row in rows).items()) == \
        sorted((key, 1) for key in keys)  # every job exactly once
    assert all(row["status"] == "ok" for row in rows), [r.get("error") for r in rows]
    with ResultStore(tmp_path / "ray.sqlite") as store:
        on_cluster = store.results().set_index("job_key")[NUMBERS]
    assert len(on_cluster) == len(serial) == 6
    assert on_cluster.sort_index().equals(serial.sort_index())  # bit for bit
