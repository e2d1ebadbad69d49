"""The retrieval service as a real process: wire format, episodes through it, clean shutdown."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from creditgym.envs.search import RemoteRetriever, RetrieverError, SearchEnv, get_retriever

ROOT = Path(__file__).resolve().parents[2]
CORPUS = {"corpus": "synthetic", "num_passages": 1500, "num_questions": 300, "corpus_seed": 7}
KEY = ("synthetic", None, 1500, 300, 7, 100_000)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _pids_with(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmd:
                pids.append(int(entry))
    return pids


@pytest.fixture(scope="module")
def service():
    port = _free_port()
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "serve_retriever.py"),
        "--corpus", "synthetic", "--num-passages", "1500", "--num-questions", "300",
        "--corpus-seed", "7", "--port", str(port),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        line = proc.stdout.readline()  # blocks until the service announces it is ready
        assert line, f"service did not start: {proc.stderr.read()}"
        ready = json.loads(line)
        assert ready["ready"] and ready["passages"] == 1500
        yield ready["url"], proc, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_wire_format(service):
    url, _, _ = service
    status, body = _post(
        url + "/retrieve", {"queries": ["a b", "c"], "topk": 3, "return_scores": True}
    )
    assert status == 200 and len(body["result"]) == 2
    item = body["result"][0][0]
    assert set(item) == {"document", "score"} and set(item["document"]) == {"id", "contents"}
    assert item["document"]["contents"].startswith('"') and "\n" in item["document"]["contents"]
    # Clients in the field also send "query" (a string or a list) and omit scores.
    status, body = _post(url + "/retrieve", {"query": "a b", "topk": 2})
    assert (
        status == 200
        and len(body["result"]) == 1
        and set(body["result"][0][0]) == {"id", "contents"}
    )
    status, body = _post(url + "/retrieve", {"query": ["x", "y", "z"], "topk": 1})
    assert status == 200 and [len(r) for r in body["result"]] == [1, 1, 1]
    for bad, needle in [
        ({"queries": ["x"], "topk": 0}, "topk must be in [1, 100]"),
        ({"topk": 3}, "missing 'queries'"),
        ({"queries": ["x"], "query": "y"}, "not both"),
        ({"queries": []}, "between 1 and"),
    ]:
        status, body = _post(url + "/retrieve", bad)
        assert status == 422 and needle in json.dumps(body), body
    status, body = _post(url + "/retrieve", {"querys": ["typo"]})
    assert status == 422 and "querys" in json.dumps(body)
    with urllib.request.urlopen(url + "/health", timeout=5) as resp:
        assert json.loads(resp.read())["passages"] == 1500


def test_episodes_through_the_service_match_in_process(service):
    url, _, _ = service
    remote = SearchEnv(split="valid", retriever_url=url, **CORPUS)
    local = SearchEnv(split="valid", **CORPUS)
    assert isinstance(remote.retriever, RemoteRetriever)
    assert remote.panel.hash == local.panel.hash
    wins = 0
    for i in range(20):
        trace = []
        for env in (remote, local):
            env.reset(options={"task_id": i})
            steps, done = [], False
            while not done:
                obs, r, term, trunc, info = env.step(env.expert_action())
                steps.append((obs, r, info["state_key"]))
                done = term or trunc
            trace.append(steps)
        assert trace[0] == trace[1]
        wins += trace[0][-1][1]
    assert wins >= 19
    # Direct client call: same ids and (float32) scores as in-process BM25.
    qs = ["engineer born", "founded company"]
    a, b = remote.retriever.search(qs, 3), get_retriever(KEY).search(qs, 3)
    assert [[h.id for h in row] for row in a] == [[h.id for h in row] for row in b]


def test_client_reports_a_dead_service_clearly():
    env = SearchEnv(retriever_url=f"http://127.0.0.1:{_free_port()}", **CORPUS)
    env.reset(seed=0)
    obs, r, term, trunc, info = env.step("<search>anything</search>")
    assert term and r == 0.0 and "unreachable" in info["error"] and "search service failed" in obs
    with pytest.raises(RetrieverError, match="unreachable"):
        RemoteRetriever(f"http://127.0.0.1:{_free_port()}", timeout=2).search(["x"])


def test_stopping_leaves_no_process(service):
    url, proc, port = service
    marker = f"--port {port}"
    assert _pids_with(marker) == [proc.pid]
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=20)
    deadline = time.time() + 5
    while _pids_with(marker) and time.time() < deadline:
        time.sleep(0.1)
    assert _pids_with(marker) == []
    with pytest.raises(RetrieverError):
        RemoteRetriever(url, timeout=2).search(["x"])
