"""`ReplicaSet`'s routing, stickiness, take-out and weight-version checks, against small HTTP
servers on loopback.

Each server answers the few endpoints the replica set uses (completions in token mode, health,
reload, prefix-cache reset, weight version) and records what it was asked; a test can make any of
them fail. What is checked is our routing and bookkeeping; vLLM's own behaviour is exercised by
the slow test in test_replicas_vllm.py.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from creditgym.agents.backends.base import SamplingConfig
from creditgym.agents.backends.replicas import NoReplicaLeft, ReplicaSet


class _Server:
    """A loopback HTTP server speaking the subset of vLLM's API the replica set uses."""

    def __init__(self, index: int):
        self.index = index
        self.prompts: list[list[int]] = []
        self.version = "0"
        self.reloads: list[str] = []
        self.fail: set[str] = set()  # endpoints that answer 500
        self.report_version: str | None = None  # what /weight_info says, if not the truth
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, code: int, body: object = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                path = self.path.split("?")[0]
                if path in server.fail:
                    return self._reply(500, {"error": "down"})
                if path == "/health":
                    return self._reply(200)
                if path == "/v1/models":
                    return self._reply(200, {"data": [{"id": "m", "max_model_len": 256}]})
                if path == "/weight_info":
                    reported = server.report_version or server.version
                    return self._reply(200, {"weight_version": reported})
                return self._reply(404, {"error": path})

            def do_POST(self):  # noqa: N802
                path = self.path.split("?")[0]
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if path in server.fail:
                    return self._reply(500, {"error": "down"})
                if path == "/v1/completions":
                    prompt = list(body["prompt"])
                    if prompt != [0]:  # not the start-up probe
                        server.prompts.append(prompt)
                    ids = [server.index, len(prompt)][: body["max_tokens"]]
                    choice = {
                        "text": "x",
                        "token_ids": ids,
                        "logprobs": {"token_logprobs": [-0.5] * len(ids)},
                        "finish_reason": "stop",
                    }
                    return self._reply(200, {"choices": [choice]})
                if path == "/collective_rpc":
                    server.reloads.append(body["kwargs"]["weights_path"])
                    return self._reply(200)
                if path == "/reset_prefix_cache":
                    return self._reply(200)
                if path == "/update_weight_version":
                    server.version = body["new_version"]
                    return self._reply(200, {"success": True})
                return self._reply(404, {"error": path})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers():
    started = [_Server(i) for i in range(3)]
    yield started
    for s in started:
        s.stop()


SAMPLING = SamplingConfig(max_new_tokens=2)


def _replicas(servers, n: int = 2, **kwargs) -> ReplicaSet:
    return ReplicaSet(replicas=[s.url for s in servers[:n]], health_interval_s=0, **kwargs)


def _served_by(gens) -> list[int]:
    return [g.token_ids[0] for g in gens]


def test_least_loaded_routing_and_episode_stickiness(servers) -> None:
    rs = _replicas(servers)
    try:
        # Four new episodes spread over the two replicas, then each episode stays on its own.
        first = rs.generate([[1, 2]] * 4, SAMPLING, sessions=[("e", ep, 0) for ep in range(4)])
        assert sorted(_served_by(first)) == [0, 0, 1, 1]
        for step in (1, 2):
            later = rs.generate(
                [[1, 2, step]] * 4, SAMPLING, sessions=[("e", ep, step) for ep in range(4)]
            )
            assert _served_by(later) == _served_by(first)
        # Without sessions every prompt goes to the least-loaded one: an even split.
        assert sorted(_served_by(rs.generate([[3]] * 6, SAMPLING))) == [0, 0, 0, 1, 1, 1]
        # Episode 0 starting again (step 0) is placed afresh.
        again = rs.generate([[9]], SAMPLING, sessions=[("e", 0, 0)])
        assert len(again) == 1
    finally:
        rs.close()


def test_failed_replica_is_taken_out_and_its_episodes_move(servers) -> None:
    rs = _replicas(servers, retries=0)
    try:
        sessions = [("e", ep, 0) for ep in range(4)]
        first = _served_by(rs.generate([[1]] * 4, SAMPLING, sessions=sessions))
        servers[1].fail.add("/v1/completions")
        nxt = rs.generate([[1, 1]] * 4, SAMPLING, sessions=[("e", ep, 1) for ep in range(4)])
        assert _served_by(nxt) == [0, 0, 0, 0]  # nothing lost: the failed prompts went to 0
        assert [r["live"] for r in rs.status()] == [True, False]
        assert "request failed" in rs.status()[1]["reason"]
        assert first.count(1) == 2
        # A health check that fails takes the last one out too, and the set says so.
        servers[0].fail.add("/health")
        with pytest.raises(NoReplicaLeft, match="health check"):
            rs.generate([[2]], SAMPLING)
    finally:
        rs.close()


def test_weight_sync_checks_every_replicas_version(servers, tmp_path) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")  # an exported folder, used as it is
    rs = _replicas(servers, n=3)
    try:
        rs.sync_weights(str(folder))
        assert [s.version for s in servers] == ["1", "1", "1"]
        assert all(len(s.reloads) == 1 for s in servers)
        # Replica 1's reload fails, replica 2 reports a version it was not given: both go.
        servers[1].fail.add("/collective_rpc")
        servers[2].report_version = "0"
        rs.sync_weights(str(folder))
        status = rs.status()
        assert [r["live"] for r in status] == [True, False, False]
        assert "weight sync to version 2 failed" in status[1]["reason"]
        assert "reports weight version '0', expected 2" in status[2]["reason"]
        # Only the replica holding version 2 serves from now on.
        for s in servers:
            s.prompts.clear()
        assert set(_served_by(rs.generate([[5]] * 5, SAMPLING))) == {0}
        assert servers[1].prompts == servers[2].prompts == []
        # Its sync failing too leaves none: a clear error, not stale weights.
        servers[0].fail.add("/update_weight_version")
        with pytest.raises(NoReplicaLeft, match="no generation replica is left"):
            rs.sync_weights(str(folder))
        with pytest.raises(NoReplicaLeft):
            rs.generate([[5]], SAMPLING)
    finally:
        rs.close()


def test_replica_config_errors() -> None:
    with pytest.raises(ValueError, match="not both"):
        ReplicaSet(replicas=["http://127.0.0.1:1/v1"], num_replicas=2)
    with pytest.raises(ValueError, match="num_replicas must be >= 1"):
        ReplicaSet(num_replicas=0)
