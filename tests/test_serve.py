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
    assert r.status_code == 403 and "SEAL_API_KEY" in r.json()["error"]["message"]


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


def test_a_server_killed_while_learning_restarts_on_the_previous_head_and_queues_the_job_again(tiny_model_dir, tmp_path):
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
        versions = httpx.get(f"{url}/versions").json()  # the previous head (the job's second run takes seconds)
        assert versions["head"] == 0 and versions["versions"] == []
        r = httpx.post(f"{url}/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
        assert r.status_code == 200 and r.json()["model"] == "seal-head"
        # the job the kill cut short is found again and learned again from the start (to the end: test_learn_jobs_survive_a_restart)
        status = httpx.get(f"{url}/learn/{job['id']}", headers=headers).json()
        assert status["status"] in ("queued", "running") and status["note"] == "queued again: the server stopped while it was learning"
    finally:
        proc.kill()
        proc.wait()


# -- bounds: bodies, prompts, queues, uploads ------------------------------------------------------

def test_a_chunked_body_over_the_limit_is_refused_before_it_is_read(served):
    _server, _client, url = served  # max_body 64 KiB
    sent = [0]

    def endless():  # 256 MiB, chunked: no Content-Length to refuse it by
        for _ in range(4096):
            sent[0] += 1 << 16
            yield b"x" * (1 << 16)

    for path, kind in (("learn", "application/json"), ("learn", "multipart/form-data; boundary=b"), ("chat/completions", "application/json")):
        sent[0] = 0
        r = httpx.post(f"{url}/{path}", content=endless(), timeout=60,
                       headers={"Authorization": f"Bearer {KEY}", "Content-Type": kind})
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
        assert sent[0] < 64 << 20  # the server closed the connection: the client stopped long before the end


def test_a_prompt_beyond_the_context_is_refused_before_generation(served):
    server, client, url = served
    forwards = []
    hook = server.serving.model.register_forward_hook(lambda *_: forwards.append(1))
    try:
        long = "Volthaven built the ferry tower in Bergen in March. " * 600  # thousands of tokens; the model has 1,024 positions
        with pytest.raises(openai.BadRequestError, match="context is 1024 tokens") as e:
            client.completions.create(model="seal-head", prompt=long, max_tokens=8)
        assert e.value.code == "context_length_exceeded"
        r = httpx.post(f"{url}/chat/completions", json={"messages": [{"role": "user", "content": long}], "stream": True})
        assert r.status_code == 400 and "max_tokens 128" in r.json()["error"]["message"]  # not a stream that fails later
        fits = "Volthaven built the tower. " * next(k for k in range(10, 200, 10) if server.count("Volthaven built the tower. " * k) > 600)
        n = client.completions.create(model="seal-head", prompt=fits, max_tokens=1).usage.prompt_tokens
        assert 1025 - n <= 512  # a max_tokens the server accepts on its own
        with pytest.raises(openai.BadRequestError, match=f"{n} in the prompt, max_tokens {1025 - n}"):
            client.completions.create(model="seal-head", prompt=fits, max_tokens=1025 - n)  # one token past the context
        assert len(forwards) == 1  # only the one request that fitted generated
    finally:
        hook.remove()


def test_bad_bodies_are_400s_not_500s(served):
    _server, client, url = served
    with pytest.raises(openai.BadRequestError, match="model must be a string"):
        client.chat.completions.create(model=5, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    for name in ("seal-v²", "seal-v" + "9" * 5001):  # digits int() refuses or would take long: unknown models
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model=name, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    for raw, message in ((b'{"prompt": "\\ud800"}', "lone surrogate"), (b"[" * 30_000 + b"]" * 30_000, "not valid JSON")):
        r = httpx.post(f"{url}/completions", content=raw, headers=headers)
        assert r.status_code == 400 and message in r.json()["error"]["message"]
    r = httpx.post(f"{url}/learn", json={"text": "PK\x03\x04\x00\x00binary"}, headers=headers)
    assert r.status_code == 400 and "NUL" in r.json()["error"]["message"]


def test_binary_uploads_are_refused_as_the_cli_refuses_them(served, tmp_path):
    from typer.testing import CliRunner

    from seal.cli import app

    _server, _client, url = served
    data = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
    r = httpx.post(f"{url}/learn", files={"file": ("photo.txt", data, "text/plain")}, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 400 and "binary file, expected UTF-8 text: 'photo.txt'" in r.json()["error"]["message"]
    (tmp_path / "photo.txt").write_bytes(data)
    cli = CliRunner().invoke(app, ["learn", str(tmp_path / "photo.txt"), "--store", str(tmp_path / "s")])
    assert cli.exit_code == 2 and "binary file, expected UTF-8 text" in cli.output  # the same rule, the same words


def test_the_learn_queue_and_the_generations_are_bounded(tiny_model_dir, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    monkeypatch.setenv("SEAL_CACHE", str(tmp_path / "cache"))
    server = Server(Seal(store=tmp_path / "store", model=tiny_model_dir), learn_config=LOUD, max_jobs=2, max_requests=1)
    server.close()  # no worker: every job stays queued
    client = TestClient(create_app(server, api_key=KEY))
    auth = {"Authorization": f"Bearer {KEY}"}
    codes = [client.post("/v1/learn", json={"text": f"Fact {i}."}, headers=auth).status_code for i in range(3)]
    assert codes == [202, 202, 429]
    r = client.post("/v1/learn", json={"text": "One more."}, headers=auth)
    assert "2 learn jobs are already waiting" in r.json()["error"]["message"] and r.json()["error"]["code"] == "queue_full"
    release = server.slots.take()  # the one generation slot busy (a stream in progress)
    r = client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
    assert r.status_code == 503 and "busy" in r.json()["error"]["message"]
    release()
    assert client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2}).status_code == 200
    assert server.slots.free == 1


def test_rollback_while_the_store_is_being_written_is_a_conflict(served):
    server, _client, url = served
    headers = {"Authorization": f"Bearer {KEY}"}
    lm = server.seal.lm
    with server.seal.store.lock() as store:
        store.init(lm.name, lm.path, lm.checksum)  # a store with nothing learned yet
    with server.learning:  # as the worker holds it through a learn
        r = httpx.post(f"{url}/rollback", json={"version": 0}, headers=headers)
        assert r.status_code == 409 and "a learn job is running" in r.json()["error"]["message"]
    with server.seal.store.lock():  # another writer (e.g. `seal learn` in another process)
        r = httpx.post(f"{url}/rollback", json={"version": 0}, headers=headers)
        assert r.status_code == 409 and "busy" in r.json()["error"]["message"]
    assert httpx.post(f"{url}/rollback", json={"version": 3}, headers=headers).status_code == 400  # no such version
    assert httpx.post(f"{url}/rollback", json={"version": 0}, headers=headers).json() == {"head": 0, "previous": 0}


# -- streams ---------------------------------------------------------------------------------------

def test_a_closed_stream_stops_its_generation(tiny_lm):
    from seal.core.generation import Sampling

    forwards = []
    tiny_lm.model.register_forward_hook(lambda *_: forwards.append(1))
    sampling = Sampling(max_new_tokens=512)
    full = "".join(tiny_lm.generator.stream("Volthaven", sampling=sampling))
    assert full and len(forwards) == 512  # this prompt runs to the limit
    forwards.clear()
    pieces = tiny_lm.generator.stream("Volthaven", sampling=sampling)
    next(pieces)
    pieces.close()  # what the server does when the client goes away
    assert len(forwards) < 16


def test_a_client_that_drops_a_stream_frees_the_model(served):
    server, client, url = served
    for _ in range(3):
        with httpx.stream("POST", f"{url}/completions", json={"prompt": "Volthaven", "max_tokens": 512, "stream": True}) as r:
            assert r.status_code == 200
            next(r.iter_lines())  # the first event, then the client goes away mid-stream
    deadline = time.monotonic() + 10
    while server.slots.free != server.slots.n or server.lock.locked():
        assert time.monotonic() < deadline, "a dropped stream still holds the model or its slot"
        time.sleep(0.05)
    assert isinstance(_ask(client), str)


# -- jobs survive a restart ------------------------------------------------------------------------

def test_learn_jobs_survive_a_restart(tiny_model_dir, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    monkeypatch.setenv("SEAL_CACHE", str(tmp_path / "cache"))
    quick = LearnConfig(sampling=SamplingConfig(k=0), anchors=0, guard=GuardConfig(enabled=False),
                        inner=InnerLoopConfig(lora_r=4, lora_alpha=8, epochs=1, lr=5e-3))
    seal = Seal(store=tmp_path / "store", model=tiny_model_dir)
    first = Server(seal, learn_config=quick)
    first.close()  # stopped before it learned anything: both jobs are still queued
    auth = {"Authorization": f"Bearer {KEY}"}
    ids = [TestClient(create_app(first, api_key=KEY)).post("/v1/learn", json={"text": t, "title": t[:5]}, headers=auth).json()["id"]
           for t in ("Volthaven built the tower.", "Lagos got ferry batteries.")]

    second = Server(seal, learn_config=quick)  # the same store: the queued jobs are found and learned
    client = TestClient(create_app(second, api_key=KEY))
    deadline = time.monotonic() + 60
    while any(client.get(f"/v1/learn/{i}", headers=auth).json()["status"] in ("queued", "running") for i in ids):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    done = [client.get(f"/v1/learn/{i}", headers=auth).json() for i in ids]
    assert [(j["status"], j["version"], j["title"]) for j in done] == [("committed", 1, "Volth"), ("committed", 2, "Lagos")]
    assert client.get("/v1/learn/learn-1-bogus", headers=auth).status_code == 404
    second.close()

    # a server that died after committing a version but before recording it: the version is the job's
    # outcome, not a reason to learn the document a second time
    record = json.loads((seal.store.root / "jobs" / f"{ids[1]}.json").read_text())
    record.update(status="running", version=None, finished=None, text="Lagos got ferry batteries.")
    (seal.store.root / "jobs" / f"{ids[1]}.json").write_text(json.dumps(record))
    third = Server(seal, learn_config=quick)
    third.close()
    assert third.jobs[ids[0]].status == "committed" and third.jobs[ids[0]].version == 1
    assert (third.jobs[ids[1]].status, third.jobs[ids[1]].version) == ("committed", 2) and "after" in third.jobs[ids[1]].note
    assert seal.store.state()["versions"] == [1, 2]
    # the next id does not reuse a number, and a damaged job file is set aside, not deleted nor fatal
    (seal.store.root / "jobs" / "learn-9-x.json").write_text("{torn")
    fourth = Server(seal, learn_config=quick)
    fourth.close()
    assert any("learn-9-x.json is damaged" in n for n in fourth.notes)
    assert list((seal.store.root / "jobs").glob("learn-9-x.json.damaged-*"))
    assert fourth.submit("A third fact.", "").id.startswith("learn-3-")
