"""`seal serve` driven as users will: the official openai client against a real server (tiny model)."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from seal.api import Seal  # noqa: E402
from seal.core.config import GuardConfig, InnerLoopConfig, LearnConfig, SamplingConfig  # noqa: E402
from seal.serve import Server, create_app  # noqa: E402

KEY = "test-key"
# A recipe that changes the tiny model's greedy answers for sure: passage only, a high rate, no guard.
LOUD = LearnConfig(sampling=SamplingConfig(k=0), anchors=0, guard=GuardConfig(enabled=False),
                   inner=InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=8, lr=5e-2))


class Running:
    def __init__(self, app, port):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def served(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SEAL_CACHE", str(tmp_path / "cache"))
    server = Server(Seal(store=tmp_path / "store", model=tiny_model_dir), learn_config=LOUD)
    port = _free_port()
    with Running(create_app(server, api_key=KEY, max_body=64 * 1024), port):
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0)
        yield server, client, f"http://127.0.0.1:{port}/v1"


def _ask(client, model="seal-head", **kw):
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Who built the tower?"}],
                                       max_tokens=12, **kw)
    return r.choices[0].message.content


def test_models_chat_streaming_and_completions(served):
    _server, client, _url = served
    assert {m.id for m in client.models.list().data} == {"seal-head", "seal-base"}
    text = _ask(client)
    assert isinstance(text, str)
    streamed = client.chat.completions.create(model="seal-head", messages=[{"role": "user", "content": "Who built the tower?"}],
                                              max_tokens=12, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in streamed]
    assert "".join(pieces) == text  # greedy: the stream is the same answer, in pieces
    done = client.completions.create(model="seal-base", prompt="Volthaven built", max_tokens=5)
    assert done.object == "text_completion" and done.usage.total_tokens >= done.usage.prompt_tokens > 0


def test_bad_requests_are_openai_error_objects(served):
    _server, client, url = served
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        _ask(client, model="gpt-4")
    with pytest.raises(openai.BadRequestError, match="temperature"):
        _ask(client, temperature=7)
    with pytest.raises(openai.BadRequestError, match="only n=1"):
        _ask(client, n=2)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    r = httpx.post(f"{url}/chat/completions", content=b"{not json", headers=headers)
    assert r.status_code == 400 and r.json()["error"]["message"] == "the body is not valid JSON"
    r = httpx.post(f"{url}/learn", content=json.dumps({"text": "x" * 100_000}), headers=headers)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = httpx.post(f"{url}/learn", json={"text": "A fact."})  # no key
    assert r.status_code == 401 and "Traceback" not in r.text


def test_a_posted_document_is_learned_and_served_atomically(served):
    server, client, url = served
    headers = {"Authorization": f"Bearer {KEY}"}
    before = _ask(client)
    job = httpx.post(f"{url}/learn", json={"text": "Volthaven built the ferry tower in Bergen in March.", "title": "Tower"},
                     headers=headers).json()
    # 200 requests from 8 concurrent clients while the document is learned: none lost, none from a
    # half-applied head (each answer is the old head's or the new head's)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _i: _ask(client), range(200)))
    assert len(answers) == 200
    while server.jobs[job["id"]].status in ("queued", "running"):
        time.sleep(0.1)
    status = httpx.get(f"{url}/learn/{job['id']}", headers=headers).json()
    assert status["status"] == "committed" and status["version"] == 1 and status["head"] == 1
    after = _ask(client)
    assert after != before  # the learned head answers differently
    assert set(answers) <= {before, after}  # never from a half-applied head
    assert _ask(client, model="seal-base") == before  # the golden copy is untouched
    assert {m.id for m in client.models.list().data} == {"seal-head", "seal-base", "seal-v1"}
    versions = httpx.get(f"{url}/versions").json()
    assert versions["head"] == 1 and versions["versions"][0]["documents"] == ["Tower"]
    assert httpx.post(f"{url}/rollback", json={"version": 0}, headers=headers).json() == {"head": 0, "previous": 1}
    assert _ask(client) == before


def test_beyond_localhost_every_endpoint_needs_the_key_and_learning_always(tiny_model_dir, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    monkeypatch.setenv("SEAL_CACHE", str(tmp_path / "cache"))
    server = Server(Seal(store=tmp_path / "store", model=tiny_model_dir), learn_config=LOUD)
    wide = TestClient(create_app(server, api_key=KEY, host="0.0.0.0"))
    assert wide.get("/v1/models").status_code == 401
    assert wide.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    keyless = TestClient(create_app(server, api_key=None))
    assert keyless.get("/v1/models").status_code == 200
    r = keyless.post("/v1/learn", json={"text": "A fact."})
    assert r.status_code == 403 and "--api-key" in r.json()["error"]["message"]


def test_a_document_can_be_uploaded_as_a_file(tiny_model_dir, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    monkeypatch.setenv("SEAL_CACHE", str(tmp_path / "cache"))
    server = Server(Seal(store=tmp_path / "store", model=tiny_model_dir), learn_config=LOUD)
    client = TestClient(create_app(server, api_key=KEY))
    auth = {"Authorization": f"Bearer {KEY}"}
    bad = client.post("/v1/learn", files={"file": ("notes.pdf", b"%PDF", "application/pdf")}, headers=auth)
    assert bad.status_code == 400 and "expected .txt or .md" in bad.json()["error"]["message"]
    latin = client.post("/v1/learn", files={"file": ("notes.txt", "Brønnøysund".encode("latin-1"), "text/plain")}, headers=auth)
    assert latin.status_code == 400 and "not UTF-8" in latin.json()["error"]["message"]
    assert client.post("/v1/learn", data={"title": "x"}, files={"other": ("a.md", b"x")}, headers=auth).status_code == 400
    r = client.post("/v1/learn", files={"file": ("ferry_note.md", b"The Porto ferry got a Kestrel battery in 2026.\n", "text/markdown")},
                    headers=auth)
    assert r.status_code == 202
    while server.jobs[r.json()["id"]].status in ("queued", "running"):
        time.sleep(0.1)
    assert server.jobs[r.json()["id"]].status == "committed"
    titled = client.post("/v1/learn", data={"title": "Battery"}, files={"file": ("b.txt", b"It holds 2 MWh.", "text/plain")}, headers=auth)
    while server.jobs[titled.json()["id"]].status in ("queued", "running"):
        time.sleep(0.1)
    assert [v["documents"] for v in client.get("/v1/versions").json()["versions"]] == [["ferry note"], ["Battery"]]


def test_a_server_killed_while_learning_restarts_on_the_previous_head(tiny_model_dir, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "SEAL_CACHE": str(tmp_path / "cache"), "SEAL_API_KEY": KEY}
    port = _free_port()
    cmd = [sys.executable, "-m", "seal.cli", "serve", "--model", str(tiny_model_dir), "--store", str(tmp_path / "store"),
           "--port", str(port)]
    url, headers = f"http://127.0.0.1:{port}/v1", {"Authorization": f"Bearer {KEY}"}

    def start():
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "seal serve did not start"
            time.sleep(0.2)

    proc = start()
    try:
        job = httpx.post(f"{url}/learn", json={"text": "Volthaven built the tower in March.", "title": "T"}, headers=headers).json()
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/learn/{job['id']}", headers=headers).json()["status"] == "queued":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # mid-learn (the default recipe takes seconds even on the tiny model)
        proc.wait()
        proc = start()
        versions = httpx.get(f"{url}/versions").json()
        assert versions["head"] == 0 and versions["versions"] == []
        r = httpx.post(f"{url}/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
        assert r.status_code == 200 and r.json()["model"] == "seal-head"
    finally:
        proc.kill()
        proc.wait()
