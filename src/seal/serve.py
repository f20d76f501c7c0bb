"""`seal serve`: an OpenAI-compatible server over a knowledge store that learns what is posted to it.

Two copies of the base model: one answers requests (with the head's deltas added to its
weights), the other learns in a background worker (`Seal.learn`, the store's writer lock and the
forgetting guard included). When a learn job commits a new head, the serving copy switches to it
between two requests, under the same lock every request takes: no answer ever comes from a
half-applied head. Requests are answered one at a time (a CPU gains nothing from interleaving).

Endpoints: GET /v1/models; POST /v1/chat/completions and /v1/completions (the usual sampling
fields, `stream` as server-sent events); POST /v1/learn {"text", "title"} or a multipart file
upload (field `file`, .txt/.md; optional `title`) -> {"id"}; GET
/v1/learn/{id}; GET /v1/versions; POST /v1/rollback {"version"}. Models are named `seal-head`,
`seal-vN` and `seal-base` (the golden copy). Errors are OpenAI-style error objects.
"""

from __future__ import annotations

import copy
import itertools
import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request  # at module level: the route signatures below are resolved by name

from seal.api import Seal
from seal.core.config import LearnConfig
from seal.domains.knowledge.data import DOCUMENT_SUFFIXES, document_passages, file_title
from seal.core.generation import HFGenerator, Sampling
from seal.core.models import LoadedModel
from seal.core.runtime import SealError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_TOKENS = 512  # the most a request may ask to generate


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class Job:
    id: str
    title: str
    status: str = "queued"  # queued | running | committed | rejected | failed
    created: float = field(default_factory=time.time)
    finished: float | None = None
    version: int | None = None
    head: int | None = None
    guard: dict | None = None
    error: str | None = None

    def to_json(self) -> dict:
        out = {k: v for k, v in self.__dict__.items()}
        out["seconds"] = round((self.finished or time.time()) - self.created, 2)
        return out


class Server:
    """The state behind the app: the serving copy with the head applied, and the learn worker."""

    def __init__(self, seal: Seal, learn_config: LearnConfig | None = None):
        self.seal = seal
        self.learn_config = learn_config or LearnConfig()
        base = seal.lm
        self.serving = LoadedModel(model=copy.deepcopy(base.model), tokenizer=base.tokenizer, name=base.name,
                                   path=base.path, checksum=base.checksum)
        # The serving copy is this generator's alone, so the chain it last served stays applied.
        self.generator = HFGenerator(self.serving, resident=True)
        self.lock = threading.Lock()  # held by every generation and by a head switch
        self.jobs: dict[str, Job] = {}
        self._queue: queue.Queue[tuple[Job, str]] = queue.Queue()
        self._ids = itertools.count(1)
        with self.lock:
            self.generator.preload(self._chain(seal.store.head if seal.store.exists else 0))
        self._worker = threading.Thread(target=self._work, daemon=True)
        self._worker.start()

    def _chain(self, version: int) -> list:
        return self.seal.store.adapter_dirs(version) if version else []

    def resolve(self, name: str | None) -> int:
        head = self.seal.store.head if self.seal.store.exists else 0
        if name in (None, "", "seal-head", "seal"):
            return head
        if name == "seal-base":
            return 0
        if name.startswith("seal-v") and name[6:].isdigit():
            v = int(name[6:])
            if v == 0 or (self.seal.store.exists and v in self.seal.store.state()["versions"]):
                return v
        raise ApiError(404, f"The model {name!r} does not exist (GET /v1/models lists them)", param="model",
                       code="model_not_found")

    def models(self) -> list[dict]:
        versions = self.seal.store.state()["versions"] if self.seal.store.exists else []
        names = ["seal-head", "seal-base", *(f"seal-v{v}" for v in versions)]
        return [{"id": n, "object": "model", "created": 0, "owned_by": "seal"} for n in names]

    # -- answering -------------------------------------------------------------------------------
    def complete(self, version: int, prompt: str, sampling: Sampling) -> str:
        with self.lock:
            return self.generator.generate([prompt], adapters=self._chain(version), sampling=sampling)[0][0]

    def stream(self, version: int, prompt: str, sampling: Sampling):
        with self.lock:
            yield from self.generator.stream(prompt, adapters=self._chain(version), sampling=sampling)

    def after_commit(self) -> None:
        """A learn or rollback moved the head: serve it from the next request on."""
        with self.lock:
            self.generator.preload(self._chain(self.seal.store.head))

    # -- learning --------------------------------------------------------------------------------
    def submit(self, text: str, title: str) -> Job:
        job = Job(id=f"learn-{next(self._ids)}-{uuid.uuid4().hex[:8]}", title=title)
        self.jobs[job.id] = job
        self._queue.put((job, text))
        return job

    def _work(self) -> None:
        while True:
            job, text = self._queue.get()
            job.status = "running"
            try:
                passages = document_passages(text, job.id, job.title, self.learn_config.max_chunk_words)
                outcome = self.seal.learn(passages, config=self.learn_config)
                job.version, job.guard = outcome.version, outcome.guard
                job.status = "committed" if outcome.head_moved else "rejected"
                self.after_commit()
            except SealError as e:
                job.status, job.error = "failed", str(e)
            except Exception as e:  # a job must never kill the worker; the store is safe by construction
                job.status, job.error = "failed", f"{type(e).__name__}: {e}"
            job.head = self.seal.store.head if self.seal.store.exists else 0
            job.finished = time.time()


# -- the ASGI app ----------------------------------------------------------------------------------

def _sampling(body: dict) -> Sampling:
    def number(key, lo, hi, default, integer=False):
        value = body.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            raise ApiError(400, f"{key} must be a {'integer' if integer else 'number'}", param=key)
        if not (lo <= value <= hi) or value != value:
            raise ApiError(400, f"{key} must be between {lo} and {hi}, not {value}", param=key)
        return value

    if body.get("n", 1) != 1:
        raise ApiError(400, "only n=1 is supported", param="n")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) and s for s in stop) and len(stop) <= 4):
        raise ApiError(400, "stop must be a string or a list of up to 4 non-empty strings", param="stop")
    limit = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    return Sampling(max_new_tokens=number(limit, 1, MAX_TOKENS, 128, integer=True), temperature=number("temperature", 0, 2, 0.0),
                    top_p=number("top_p", 1e-6, 1, 1.0), seed=number("seed", 0, 2**32 - 1, 0, integer=True), stop=tuple(stop or ()))


def _trim(text: str, stop: tuple[str, ...]) -> tuple[str, str]:
    """Cut at the first stop string, as OpenAI does (the stop string itself is not returned)."""
    for s in stop:
        i = text.find(s)
        if i >= 0:
            return text[:i], "stop"
    return text, "length"


def create_app(server: Server, api_key: str | None = None, host: str = "127.0.0.1", max_body: int = 1 << 20):
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title="seal", docs_url=None, redoc_url=None, openapi_url=None)
    open_reads = host in LOCAL_HOSTS  # beyond localhost every endpoint needs the key

    @app.exception_handler(ApiError)
    async def _api_error(_request, e: ApiError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, e):
        return JSONResponse(ApiError(400, "invalid request").body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request, e):
        return JSONResponse(ApiError(e.status_code, str(e.detail), code=str(e.status_code)).body(), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _crash(_request, e):  # never a traceback to the client
        return JSONResponse(ApiError(500, f"internal error: {type(e).__name__}", "server_error").body(), status_code=500)

    def check_auth(request: Request, writes: bool) -> None:
        if not writes and open_reads:
            return
        if api_key is None:
            raise ApiError(403, "learning and rollback need a key: start `seal serve --api-key KEY` (or set SEAL_API_KEY)",
                           "permission_error")
        if request.headers.get("authorization", "") != f"Bearer {api_key}":
            raise ApiError(401, "missing or wrong API key (Authorization: Bearer KEY)", "authentication_error",
                           code="invalid_api_key")

    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body:
            raise ApiError(413, f"request body over {max_body} bytes", code="request_too_large")
        raw = await request.body()
        if len(raw) > max_body:
            raise ApiError(413, f"request body over {max_body} bytes", code="request_too_large")
        return raw

    async def read_json(request: Request) -> dict:
        raw = await read_body(request)
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        return body

    def chunk(kind: str, rid: str, model: str, text: str | None, finish: str | None) -> str:
        if kind == "chat":
            delta = {"content": text} if text is not None else {}
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish}
            obj = "text_completion"
        return "data: " + json.dumps({"id": rid, "object": obj, "created": int(time.time()), "model": model,
                                      "choices": [choice]}) + "\n\n"

    def respond(kind: str, model: str, version: int, prompt: str, sampling: Sampling, stream: bool):
        rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:12]}"
        n_prompt = len(server.serving.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if stream:
            def events():
                text = ""
                if kind == "chat":
                    yield chunk(kind, rid, model, "", None).replace('"content": ""', '"role": "assistant", "content": ""')
                stopped = None
                for piece in server.stream(version, prompt, sampling):
                    if stopped:
                        continue  # let the generation finish; send nothing after a stop string
                    before = len(text)
                    text, stopped = _trim(text + piece, sampling.stop)
                    stopped = stopped if stopped == "stop" else None
                    if len(text) > before:
                        yield chunk(kind, rid, model, text[before:], None)
                yield chunk(kind, rid, model, None, stopped or "stop")
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        text, finish = _trim(server.complete(version, prompt, sampling), sampling.stop)
        n_out = len(server.serving.tokenizer(text, add_special_tokens=False)["input_ids"])
        if finish == "length" and n_out < sampling.max_new_tokens:
            finish = "stop"
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish} if kind == "chat"
                  else {"index": 0, "text": text, "finish_reason": finish})
        return {"id": rid, "object": "chat.completion" if kind == "chat" else "text_completion", "created": int(time.time()),
                "model": model, "choices": [choice],
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out}}

    @app.get("/v1/models")
    async def models(request: Request):
        check_auth(request, writes=False)
        return {"object": "list", "data": server.models()}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        check_auth(request, writes=False)
        body = await read_json(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)
                for m in messages):
            raise ApiError(400, "messages must be a non-empty list of {role: system|user|assistant, content: string}",
                           param="messages")
        version = server.resolve(body.get("model"))
        sampling = _sampling(body)
        tok = server.serving.tokenizer
        if getattr(tok, "chat_template", None):
            prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            prompt = "\n\n".join(m["content"] for m in messages) + "\n\n"
        return await _run(respond, "chat", body.get("model") or "seal-head", version, prompt, sampling, bool(body.get("stream")))

    @app.post("/v1/completions")
    async def completions(request: Request):
        check_auth(request, writes=False)
        body = await read_json(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise ApiError(400, "prompt must be a non-empty string", param="prompt")
        version = server.resolve(body.get("model"))
        return await _run(respond, "text", body.get("model") or "seal-head", version, prompt, _sampling(body),
                          bool(body.get("stream")))

    async def read_upload(request: Request) -> tuple[str, str]:
        """A document uploaded as multipart/form-data: field `file` (.txt/.md, UTF-8), optional
        `title` (else the first Markdown heading, else the file name)."""
        await read_body(request)  # the size limit first; the form is parsed from the read body
        try:
            form = await request.form()
        except Exception:
            raise ApiError(400, "the body is not valid multipart/form-data") from None
        upload, title = form.get("file"), form.get("title")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "a multipart upload needs a file field named 'file'", param="file")
        name = upload.filename or ""
        if Path(name).suffix.lower() not in DOCUMENT_SUFFIXES:
            raise ApiError(400, f"unsupported file type {Path(name).suffix or '(none)'}: {name!r} (expected .txt or .md)", param="file")
        try:
            text = (await upload.read()).decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, f"{name!r} is not UTF-8 text", param="file") from None
        return text, title if isinstance(title, str) and title else file_title(name)

    @app.post("/v1/learn")
    async def learn(request: Request):
        check_auth(request, writes=True)
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            text, title = await read_upload(request)
        else:
            body = await read_json(request)
            text, title = body.get("text"), body.get("title", "")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "text must be a non-empty string", param="text")
        if not isinstance(title, str):
            raise ApiError(400, "title must be a string", param="title")
        job = server.submit(text, title)
        return JSONResponse({"id": job.id, "status": job.status}, status_code=202)

    @app.get("/v1/learn/{job_id}")
    async def learn_status(job_id: str, request: Request):
        check_auth(request, writes=True)
        if job_id not in server.jobs:
            raise ApiError(404, f"no learn job {job_id!r}", param="id")
        return server.jobs[job_id].to_json()

    @app.get("/v1/versions")
    async def versions(request: Request):
        check_auth(request, writes=False)
        rows = [{"version": m["version"], "parent": m.get("parent"), "created": m.get("created"), "head": m["head"],
                 "active": m["active"], "documents": [d["title"] for d in m.get("documents", [])],
                 "guard": (m.get("guard") or {}).get("decision"), "damaged": m["damaged"]} for m in server.seal.history()]
        return {"head": server.seal.store.head if server.seal.store.exists else 0, "versions": rows}

    @app.post("/v1/rollback")
    async def rollback(request: Request):
        check_auth(request, writes=True)
        body = await read_json(request)
        v = body.get("version")
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ApiError(400, "version must be an integer >= 0", param="version")
        try:
            old = server.seal.rollback(v)
        except SealError as e:
            raise ApiError(400, str(e), param="version") from None
        server.after_commit()
        return {"head": v, "previous": old}

    return app


async def _run(fn, *args):
    """Run a blocking call (generation) in a worker thread so the event loop keeps serving."""
    import anyio

    return await anyio.to_thread.run_sync(fn, *args)
