"""The ``ray`` env backend: each shard is a threaded Ray actor holding a `ServedShard`.

Actors are created with ``max_concurrency = k + 2`` (each env's call runs on a thread of its own,
plus health and close), ``max_restarts=-1`` (Ray restarts a dead actor, on another node if its
node is gone) and ``max_task_retries=0`` (a step is not idempotent: never replayed). Placement is
``SPREAD``; ``ray_resources`` (``ray.shard_resources``) adds custom resources, e.g. one that only
env nodes declare, and ``ray_cpus_per_shard`` the CPUs an actor reserves (0 by default: env
actors mostly wait).

Ray itself is imported when the first shard is built. With ``ray_address`` (``ray.address``,
e.g. ``"auto"``) the pool joins that cluster; without it a local one is started
(``ray.init(address="local", ...)``). Either way the connection made here is shut down when the
last pool using it closes; a Ray session that was already initialised (by the caller) is left
alone. Ray 2.60 turns token authentication on: a local cluster generates its own token, and
joining a secured cluster needs ``RAY_AUTH_TOKEN`` (or Ray's token file) on this machine.

After shutting down a local cluster it started, the pool makes sure no process of that cluster
is left (`reap_local_cluster`): the head processes Ray started (GCS, raylet, monitors), their
descendants, and any process whose environment names the cluster's raylet
(``RAY_RAYLET_PID``, which Ray sets for every worker and which a worker's own children inherit)
get a grace period to exit and are then killed. A joined cluster is never touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from creditgym.trainers.shard_remote import RemoteShard, ServedShard, WorkerLost
from creditgym.trainers.shards import EnvDescription, register_shard

__all__ = ["RayShard", "acquire_ray", "reap_local_cluster", "release_ray"]

_session_lock = threading.Lock()
_session = {"users": 0, "owned": False, "local": False}
#: Seconds a local cluster's processes get to exit after `ray.shutdown` before they are killed.
REAP_GRACE_S = 10.0
#: What the last local cluster's reaping saw: its raylet pid, how many processes were known
#: before the shutdown, and the pids killed after it.
last_reap: dict[str, Any] = {}


def acquire_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Make sure this process is connected to Ray (joining `address` or starting a local one)."""
    import ray

    with _session_lock:
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(
                    address="local",
                    num_cpus=num_cpus or os.cpu_count() or 1,
                    include_dashboard=False,
                    object_store_memory=100_000_000,
                    log_to_driver=False,
                )
            _session["owned"] = True
            _session["local"] = not address
        _session["users"] += 1


def release_ray() -> None:
    """Drop one user of the connection; shut it down after the last if it was made here."""
    import ray

    with _session_lock:
        _session["users"] = max(_session["users"] - 1, 0)
        if _session["users"] == 0 and _session["owned"]:
            local = _session["local"]
            _session["owned"] = _session["local"] = False
            cluster = None
            if local:
                try:  # reads Ray's node record (a private API): never block the shutdown
                    cluster = _local_cluster()
                except Exception:
                    cluster = None
            ray.shutdown()
            if cluster is not None:
                last_reap.clear()
                last_reap.update(raylet=cluster[1], known=len(cluster[0]))
                last_reap["killed"] = reap_local_cluster(*cluster)


def _start_time(pid: int) -> int | None:
    """A process's start time (clock ticks since boot, /proc/<pid>/stat field 22); None when
    it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _parents() -> dict[int, int]:
    """pid -> parent pid of every visible process."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                out[int(entry.name)] = int(stat[1])
    return out


def _local_cluster() -> tuple[dict[int, int], int, int] | None:
    """The processes of the local cluster this process started, read before it shuts down:
    {pid: start time} of its head processes and their descendants, the raylet's pid and start
    time. None where /proc or Ray's node record is unavailable."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    if node is None or not Path("/proc/self/stat").exists():
        return None
    head = {info.process.pid for infos in node.all_processes.values() for info in infos}
    raylets = [info.process.pid for info in node.all_processes.get("raylet", [])]
    parents = _parents()
    known, frontier = set(head), set(head)
    while frontier:  # descendants, breadth first
        frontier = {p for p, pp in parents.items() if pp in frontier and p not in known}
        known |= frontier
    started = {p: t for p in known if (t := _start_time(p)) is not None}
    if not raylets or raylets[0] not in started:
        return started, -1, 0
    return started, raylets[0], started[raylets[0]]


def _names_raylet(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def reap_local_cluster(
    known: dict[int, int], raylet_pid: int, raylet_start: int, grace_s: float | None = None
) -> list[int]:
    """Kill what is left of a local Ray cluster after `ray.shutdown`; return the pids killed.

    Left means: a process of ``known`` ({pid: start time}, read before the shutdown) still
    running with the same start time, or any process started since the raylet whose environment
    holds ``RAY_RAYLET_PID=<raylet_pid>`` (a worker the raylet started late, or a process a worker
    started). They get ``grace_s`` (`REAP_GRACE_S`) to exit on their own, then SIGKILL; a
    RuntimeWarning names what was killed.
    """
    grace = REAP_GRACE_S if grace_s is None else grace_s
    me = os.getpid()
    marker = f"RAY_RAYLET_PID={raylet_pid}".encode()

    def left() -> dict[int, int]:
        out = {p: t for p, t in known.items() if p != me and _start_time(p) == t}
        if raylet_pid > 0:
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit() or int(entry.name) in out or int(entry.name) == me:
                    continue
                pid = int(entry.name)
                start = _start_time(pid)
                if start is not None and start >= raylet_start and _names_raylet(pid, marker):
                    out[pid] = start
        return out

    deadline = time.monotonic() + grace
    while (stray := left()) and time.monotonic() < deadline:
        time.sleep(0.2)
    killed = []
    for pid, start in stray.items():
        if _start_time(pid) == start:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    if killed:
        warnings.warn(
            f"the local Ray cluster left {len(killed)} process(es) after shutdown; killed "
            f"{sorted(killed)}",
            RuntimeWarning,
            stacklevel=2,
        )
    return killed


class _ShardActor:
    """The Ray actor: a `ServedShard` and the node it runs on."""

    def __init__(self, spec: dict[str, Any]):
        self.served = ServedShard(**spec)

    def describe(self) -> EnvDescription:
        return self.served.description

    def call(self, method: str, calls: list[Any]) -> Any:
        out = self.served.call(method, calls)
        if method == "health":
            import ray

            out = {**out, "node_id": ray.get_runtime_context().get_node_id()}
        return out

    def close(self) -> None:
        self.served.close()


_actor_class: Any = None


def _remote_class() -> Any:
    global _actor_class
    if _actor_class is None:
        import ray

        _actor_class = ray.remote(_ShardActor)
    return _actor_class


@register_shard("ray")
class RayShard(RemoteShard):
    """k envs in a threaded Ray actor; Ray restarts it when it dies, this client notices."""

    extra_options = ("ray_address", "ray_num_cpus", "ray_resources", "ray_cpus_per_shard")

    def __init__(self, env_id: str, size: int, split: str, env_kwargs: dict[str, Any], **options):
        self._actor: Any = None
        self._relay = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ray-shard-relay")
        #: The actor was killed with restart allowed: the next `_spawn` waits for Ray's restart.
        self._restarting = False
        address = options.get("ray_address")
        acquire_ray(address, options.get("ray_num_cpus"))
        self._released = False
        try:
            super().__init__(env_id, size, split, env_kwargs, **options)
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        if not self._released:
            self._released = True
            release_ray()

    def _spawn(self) -> EnvDescription:
        import ray

        if self._actor is not None and self._restarting:
            self._restarting = False
            try:
                return ray.get(self._actor.describe.remote(), timeout=self.rebuild_timeout_s)
            except Exception:
                self._kill(final=True)
                raise
        cpus = float(self.options.get("ray_cpus_per_shard") or 0.0)
        resources = dict(self.options.get("ray_resources") or {})
        spec = {
            "env_id": self.env_id,
            "size": self.size,
            "split": self.split,
            "env_kwargs": self.env_kwargs,
            "step_latency_s": self.step_latency_s,
        }
        self._actor = (
            _remote_class()
            .options(
                max_concurrency=self.size + 2,
                max_restarts=-1,
                max_task_retries=0,
                num_cpus=cpus,
                resources=resources,
                scheduling_strategy="SPREAD",
            )
            .remote(spec)
        )
        self._restarting = False
        try:
            return ray.get(self._actor.describe.remote(), timeout=self.rebuild_timeout_s)
        except Exception:
            self._kill(final=True)
            raise

    def _send(self, method: str, calls: list[Any]) -> Future:
        if self._actor is None:
            fut: Future = Future()
            fut.set_exception(WorkerLost("the shard's Ray actor is gone"))
            return fut
        raw = self._actor.call.remote(method, calls).future()
        out: Future = Future()
        # Ray runs done-callbacks on its own event-loop thread, where calling Ray (ray.kill on a
        # death) or waiting on a lock deadlocks: hand every result over to a thread of ours.
        raw.add_done_callback(lambda f: self._relay.submit(_copy_outcome, f, out))
        return out

    def _is_death(self, exc: BaseException) -> bool:
        import ray.exceptions as rex

        deaths = (
            WorkerLost,
            rex.RayActorError,
            rex.WorkerCrashedError,
            rex.NodeDiedError,
            rex.ObjectLostError,
            rex.OwnerDiedError,
        )
        return isinstance(exc, deaths) and not isinstance(exc, rex.RayTaskError)

    def _kill(self, final: bool = False) -> None:
        import ray

        if self._actor is None:
            return
        if final:
            actor, self._actor = self._actor, None
            self._restarting = False
            ray.kill(actor, no_restart=True)
        else:  # Ray brings it back (max_restarts=-1); `_spawn` waits for that
            self._restarting = True
            ray.kill(self._actor, no_restart=False)

    def _shutdown(self, grace_s: float = 10.0) -> None:
        import ray

        if self._actor is not None:
            with contextlib.suppress(Exception):  # it is killed below either way
                ray.get(self._actor.close.remote(), timeout=grace_s)
        self._kill(final=True)

    def health(self) -> dict[str, Any]:
        health = super().health()
        health["backend"] = "ray"
        return health

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._relay.shutdown(wait=False)
            self._release()


def _copy_outcome(src: Future, dst: Future) -> None:
    exc = src.exception()
    if exc is not None:
        dst.set_exception(exc)
    else:
        dst.set_result(src.result())
