"""python -m pipelines.serve as a real uvicorn server on 127.0.0.1 (a
subprocess on a free port), spoken to over HTTP: the request forms, outputs
equal to predict-from-a-store, every bad-input case answered 4xx with a
message (never a 500, never a dead server), concurrent requests micro-batched
into shared forward passes, a killed server restarted losing nothing, and a
graceful shutdown on SIGTERM that still answers the request in flight."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from bertvision.inference.predict import predict_run
from bertvision.store.format import open_store
from tests.serving_runs import mrpc_store, run_specs, served_runs, sst2_mean_store  # noqa: F401
from tests.stores import REPO_ROOT, cli_env, squad_store, sst2_cls_store, sst2_seq_store  # noqa: F401

LIMITS = ["--max-wait-ms", "300", "--max-inputs", "8", "--max-chars", "2000", "--max-body-bytes", "20000"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m pipelines.serve`` in a subprocess, and an HTTP client for it."""

    def __init__(self, args: list[str], log_dir):
        self.args, self.log_dir, self.proc, self.starts = args, log_dir, None, 0

    def start(self, timeout: float = 600) -> "Server":
        self.port = free_port()
        self.starts += 1
        self.log = self.log_dir / f"serve-{self.starts}.log"
        env = cli_env()
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "pipelines.serve", *self.args, "--port",
                                          str(self.port)], cwd=REPO_ROOT, env=env, stdout=log, stderr=log)
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, f"server died:\n{self.log.read_text()[-3000:]}"
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return self
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def request(self, method: str, path: str, body=None, headers=None, chunked: bool = False, timeout=120):
        """``(status, parsed JSON or text)``."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
                headers = {"Content-Type": "application/json", **(headers or {})}
            if chunked:
                conn.request(method, path, body=iter([body[i:i + 4096] for i in range(0, len(body), 4096)]),
                             headers=headers or {}, encode_chunked=True)
            else:
                conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read().decode()
            try:
                return response.status, json.loads(data)
            except json.JSONDecodeError:
                return response.status, data
        finally:
            conn.close()

    def predict(self, body):
        return self.request("POST", "/v1/predict", body)

    def stop(self, sig=signal.SIGKILL) -> int:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=120)
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(served_runs, tmp_path_factory):  # noqa: F811
    args = [arg for spec in run_specs(served_runs) for arg in ("--run", spec)] + LIMITS
    server = Server(args, tmp_path_factory.mktemp("serve")).start()
    yield server
    server.stop()


def test_health_and_models(server, served_runs):  # noqa: F811
    status, health = server.request("GET", "/healthz")
    assert status == 200 and health["status"] == "ok"
    assert health["tasks"] == ["cls", "mean", "seq", "mrpc", "squad_v2", "ft"]
    status, models = server.request("GET", "/v1/models")
    assert status == 200
    tasks = {t["name"]: t for t in models["tasks"]}
    assert tasks["mrpc"]["inputs"] == ["text", "text_pair"] and tasks["squad_v2"]["inputs"] == ["question", "context"]
    assert tasks["cls"]["run"] == str(served_runs["cls"]) and tasks["cls"]["dev_metrics"]["accuracy"] >= 0
    assert tasks["ft"]["run_type"] == "finetune" and tasks["mrpc"]["layers"] == [3, 4, 5, 6]
    shared, tuned = models["backbones"]
    assert shared["tasks"] == ["cls", "mean", "seq", "mrpc", "squad_v2"] and shared["kind"] == "frozen, shared"
    assert len(shared["weights_sha256"]) == 64 and tuned["tasks"] == ["ft"]


def test_outputs_equal_predict_from_store(server, served_runs, sst2_cls_store, mrpc_store):  # noqa: F811
    cls_rows, mrpc_rows = open_store(sst2_cls_store).examples("dev")[:4], open_store(mrpc_store).examples("dev")[:4]
    status, out = server.predict({"inputs": {
        "cls": [r["texts"][0] for r in cls_rows],
        "mrpc": [{"text": r["texts"][0], "text_pair": r["texts"][1], "id": r["uid"]} for r in mrpc_rows]}})
    assert status == 200, out
    assert out["batch"]["forward_passes"] == 1 and out["batch"]["rows"] == 8
    for name, store, rows in (("cls", sst2_cls_store, cls_rows), ("mrpc", mrpc_store, mrpc_rows)):
        expected = predict_run(served_runs[name], store, "dev").probabilities[:4]
        got = np.array([list(r["probabilities"].values()) for r in out["results"][name]])
        np.testing.assert_allclose(got, expected, atol=2e-3)
    assert [r["id"] for r in out["results"]["mrpc"]] == [r["uid"] for r in mrpc_rows]
    assert [r["id"] for r in out["results"]["cls"]] == ["0", "1", "2", "3"]


def test_request_forms(server):
    text = "a gorgeous, witty, seductive movie"
    status, one = server.predict({"task": "seq", "inputs": [text]})
    assert status == 200 and list(one["results"]) == ["seq"] and one["results"]["seq"][0]["label"]
    status, several = server.predict({"tasks": ["cls", "mean", "seq", "ft"], "inputs": [{"text": text}]})
    assert status == 200 and list(several["results"]) == ["cls", "mean", "seq", "ft"]
    assert several["batch"]["forward_passes"] == 2  # the shared backbone and the fine-tuned BERT
    assert several["results"]["seq"] == one["results"]["seq"]
    status, squad = server.predict({"task": "squad_v2", "inputs": [
        {"question": "Where does the Rhine end?", "context": "The Rhine ends in the North Sea near Rotterdam."}]})
    assert status == 200
    (answer,) = squad["results"]["squad_v2"]
    assert set(answer) == {"answer", "start", "end", "no_answer_probability", "best_span", "id"}
    assert 0 <= answer["no_answer_probability"] <= 1
    # every served task at once: only if every task takes these inputs
    status, err = server.predict({"inputs": [text]})
    assert status == 422 and "task mrpc needs text and text_pair" in err["error"]


BAD = [  # (body, headers, status, message)
    (b"{not json", {"Content-Type": "application/json"}, 422, "not valid JSON"),
    ([1, 2], None, 422, "body: Input should be a valid dictionary"),
    ({"task": "cls"}, None, 422, "inputs: Field required"),
    ({"task": "cls", "inputs": [""]}, None, 422, "inputs[0].text: is empty"),
    ({"task": "cls", "inputs": ["   \n"]}, None, 422, "inputs[0].text: is empty"),
    ({"task": "cls", "inputs": [5]}, None, 422, "inputs[0]: expected a string (the text) or an object"),
    ({"task": "cls", "inputs": [None]}, None, 422, "inputs[0]: expected a string"),
    ({"task": "cls", "inputs": [{"text": 5}]}, None, 422, "inputs[0].text: Input should be a valid string"),
    ({"task": "cls", "inputs": [{"text": ["a"]}]}, None, 422, "inputs[0].text: Input should be a valid string"),
    ({"inputs": {"cls": [{"text": None}]}}, None, 422, "inputs.cls[0]: task cls (sst2) needs text; missing text"),
    ({"task": "cls", "inputs": [{"txt": "a"}]}, None, 422, "inputs[0].txt: Extra inputs are not permitted"),
    ({"task": "nope", "inputs": ["x"]}, None, 404, "unknown task 'nope'; served tasks: cls, mean, seq"),
    ({"inputs": {"cls": ["x"], "nope": ["y"]}}, None, 404, "unknown task 'nope'"),
    ({"task": "mrpc", "inputs": [{"text": "He left."}]}, None, 422, "missing text_pair (the pair's second text)"),
    ({"task": "squad_v2", "inputs": [{"question": "Where?"}]}, None, 422, "missing context"),
    ({"task": "cls", "inputs": [{"text": "a", "text_pair": "b"}]}, None, 422, "takes text; unexpected text_pair"),
    ({"task": "cls", "tasks": ["seq"], "inputs": ["x"]}, None, 422, "give task or tasks, not both"),
    ({"task": "cls", "inputs": {"cls": ["x"]}}, None, 422, "not both"),
    ({"task": "cls", "inputs": []}, None, 422, "no inputs for task cls"),
    ({"tasks": [], "inputs": ["x"]}, None, 422, "tasks is empty"),
    ({"task": "cls", "inputs": ["x"] * 9}, None, 422, "9 predictions asked (inputs x tasks), more than the limit of 8"),
    ({"tasks": ["cls", "mean", "seq"], "inputs": ["x"] * 3}, None, 422, "9 predictions asked"),
    ({"task": "cls", "inputs": ["x" * 2001]}, None, 422, "inputs[0].text: 2001 characters, more than the limit of 2000"),
    ({"task": "squad_v2", "inputs": [{"question": "\u200b", "context": "Some text."}]}, None, 422,
     "the question has no tokens"),
    (json.dumps({"task": "cls", "inputs": ["x"]}).encode(), {}, 422, "sent with Content-Type: application/json"),
]


def test_bad_input_gets_4xx_with_a_message(server):
    for body, headers, status, message in BAD:
        got, answer = server.request("POST", "/v1/predict", body, headers)
        assert (got, message in str(answer.get("error") if isinstance(answer, dict) else answer)) == (status, True), \
            (body, got, answer)
    big = {"task": "cls", "inputs": ["y" * 1000] * 30}  # ~30 kB over the 20 kB limit
    for chunked in (False, True):  # Content-Length over the limit; a chunked body growing past it
        got, answer = server.request("POST", "/v1/predict", json.dumps(big).encode(),
                                     {"Content-Type": "application/json"}, chunked=chunked)
        assert got == 413 and answer == {"error": "the request body is larger than the limit of 20000 bytes"}
    assert server.request("GET", "/v1/predict")[0] == 405
    assert server.request("GET", "/nowhere")[0] == 404
    # nothing crashed: the server still answers, and answers right
    assert server.proc.poll() is None and server.request("GET", "/healthz")[0] == 200
    status, out = server.predict({"task": "cls", "inputs": ["fine"]})
    assert status == 200 and out["results"]["cls"][0]["label"] in ("negative", "positive")


def _concurrently(server, bodies):
    results = [None] * len(bodies)
    barrier = threading.Barrier(len(bodies))

    def go(i):
        barrier.wait()
        results[i] = server.predict(bodies[i])

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return results


def test_concurrent_requests_share_forward_passes(server):
    before = server.request("GET", "/v1/stats")[1]
    bodies = [{"task": ("cls", "seq", "mrpc", "mean")[i % 4],
               "inputs": [{"text": f"review number {i}", **({"text_pair": "a review"} if i % 4 == 2 else {})}]}
              for i in range(8)]
    results = _concurrently(server, bodies)
    assert all(status == 200 for status, _ in results), results
    after = server.request("GET", "/v1/stats")[1]
    requests = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    shared = next(iter(after["forward_passes"]))
    passes = after["forward_passes"][shared] - before["forward_passes"][shared]
    assert requests == 8 and batches < 8, (before, after)
    assert passes == batches  # one forward pass of the shared backbone per micro-batch, not per request
    assert max(out["batch"]["requests"] for _, out in results) > 1
    assert after["largest_batch_requests"] > 1 and after["in_flight"] == 0
    for (_, out), body in zip(results, bodies):  # each answer is its own request's
        assert list(out["results"]) == [body["task"]]


def test_killed_server_restarts_losing_nothing(server):
    body = {"inputs": {"cls": ["a gorgeous film"], "mrpc": [{"text": "He left.", "text_pair": "He went away."}],
                       "squad_v2": [{"question": "Where?", "context": "The Rhine ends in the North Sea."}]}}
    status, first = server.predict(body)
    assert status == 200
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    server.start()
    status, again = server.predict(body)
    assert status == 200 and again["results"] == first["results"]


def test_sigterm_answers_the_request_in_flight_then_exits(server):
    reply = {}
    thread = threading.Thread(target=lambda: reply.update(r=server.predict({"task": "cls", "inputs": ["last one"]})))
    thread.start()
    deadline = time.time() + 60
    while server.request("GET", "/v1/stats")[1]["in_flight"] == 0:  # queued: the batch waits 300 ms
        assert time.time() < deadline and thread.is_alive()
        time.sleep(0.01)
    server.proc.send_signal(signal.SIGTERM)
    thread.join(timeout=120)
    status, out = reply["r"]
    assert status == 200 and out["results"]["cls"][0]["label"] in ("negative", "positive")
    assert server.proc.wait(timeout=120) == 0
    log = server.log.read_text()
    assert "shut down cleanly after" in log and "Traceback" not in log
    with pytest.raises(OSError):
        server.request("GET", "/healthz", timeout=5)
