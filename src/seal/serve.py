"""`seal serve`: an OpenAI-compatible server over a knowledge store that learns what is posted to it.

Two copies of the base model: one answers requests (with the head's deltas added to its
weights), the other learns in a background worker (`Seal.learn`, the store's writer lock and the
forgetting guard included). When a learn job commits a new head, the serving copy switches to it
between two requests, under the same lock every request takes: no answer ever comes from a
half-applied head. Requests are answered one at a time (a CPU gains nothing from interleaving).

Everything a client can make the server hold is bounded: a body is read as it arrives and refused
(413, connection closed) once past `max_body` bytes, whatever its headers say; a prompt whose
tokens plus max_tokens pass the model's positions is refused (400) before any generation; at most
`max_requests` generations run or wait (streams included; 503 above) and `max_jobs` learn jobs
wait (429 above). A stream whose client goes away stops its generation at the next token and
frees the model at once.

Learn jobs live in the store, one file each (STORE/jobs/<id>.json, replaced atomically at every
change): a restarted server finds its finished jobs, queues again those that were waiting, and a
job that was running when the server died is queued again, unless its version had been committed
already (the job's id is in a manifest's documents), which then is its outcome. A finished job's
file keeps its outcome, not its text (the version's manifest records what was learned).

Endpoints: GET /v1/models; POST /v1/chat/completions and /v1/completions (the usual sampling
fields, `stream` as server-sent events); POST /v1/learn {"text", "title"} or a multipart file
upload (field `file`, .txt/.md; optional `title`) -> {"id"}; GET
/v1/learn/{id}; GET /v1/versions; POST /v1/rollback {"version"}. Models are named `seal-head`,
`seal-vN` and `seal-base` (the golden copy). Errors are OpenAI-style error objects.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from fastapi import Request  # at module level: the route signatures below are resolved by name
from starlette.responses import StreamingResponse

from seal.api import Seal
from seal.core.config import LearnConfig
from seal.domains.knowledge.data import DOCUMENT_SUFFIXES, decode_text, document_passages, file_title
from seal.core.generation import HFGenerator, Sampling
from seal.core.models import LoadedModel
from seal.core.runtime import SealError, UsageError, write_json_atomic

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_TOKENS = 512  # the most a request may ask to generate
MAX_JOBS = 32  # learn jobs that may wait (each takes minutes on a real model); `seal serve --max-jobs`
MAX_REQUESTS = 16  # generations running or waiting for the model, streams included; `--max-requests`


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers

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
    note: str | None = None  # what a restart did to it

    def to_json(self) -> dict:
        out = {k: v for k, v in self.__dict__.items()}
        out["seconds"] = round((self.finished or time.time()) - self.created, 2)
        return out


JOB_STATUSES = ("queued", "running", "committed", "rejected", "failed")


def _save_job(folder: Path, job: Job, text: str | None) -> None:
    """The job's file, replaced atomically; `text` is kept while the job has still to run."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / f"{job.id}.json", {**job.__dict__, **({"text": text} if text is not None else {})})


def _read_job(path: Path) -> tuple[Job, str | None] | None:
    """A job file as (job, text), or None when it is damaged (it is then renamed, never deleted)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        text = record.pop("text", None)
        job = Job(**record)
        if job.id != path.stem or job.status not in JOB_STATUSES or not isinstance(job.title, str) \
                or not isinstance(job.created, (int, float)) or (job.status in ("queued", "running") and not isinstance(text, str)):
            raise ValueError(path.name)
        return job, text
    except (OSError, ValueError, TypeError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        with contextlib.suppress(OSError):  # a read-only store: left where it is, read (and refused) again next time
            path.replace(path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"))
        return None


def _committed_version(seal: Seal, job_id: str) -> dict | None:
    """The manifest of the version that learned this job's document, if the store has one."""
    if not seal.store.exists:
        return None
    for v in seal.store.state()["versions"]:
        try:
            documents = seal.store.manifest(v).get("documents") or []
        except SealError:  # a damaged manifest is the store's to report; it is not this job's
            continue
        if any(isinstance(d, dict) and str(d.get("id", "")).split("#")[0] == job_id for d in documents):
            return seal.store.manifest(v)
    return None


def _load_jobs(folder: Path, seal: Seal, notes: list[str]) -> list[tuple[Job, str | None]]:
    """What a previous server left, oldest first. A job that was running is resolved against the
    store: its committed version is its outcome, else it is queued again (a learn commits
    atomically, so a learn cut short left nothing to undo)."""
    for torn in folder.glob(".*.json.*.tmp"):  # from write_json_atomic, cut short
        torn.unlink(missing_ok=True)
    loaded = []
    for path in sorted(folder.glob("*.json")):
        item = _read_job(path)
        if item is None:
            notes.append(f"learn job file {path.name} is damaged: set aside as {path.name}.damaged-*, not loaded")
            continue
        job, text = item
        if job.status == "running":
            m = _committed_version(seal, job.id)
            if m is None:
                job.status, job.note = "queued", "queued again: the server stopped while it was learning"
            else:
                job.version, job.guard = m["version"], m.get("guard")
                job.status = "rejected" if (job.guard or {}).get("decision") == "rejected" else "committed"
                job.head, job.finished, text = seal.store.head, time.time(), None
                job.note = "the server stopped after its version was committed"
            try:
                _save_job(folder, job, text)
            except OSError as e:  # a read-only store still serves; the job is resolved again next time
                notes.append(f"learn job {job.id}: its record could not be updated ({e})")
        loaded.append((job, text))
    return sorted(loaded, key=lambda item: item[0].created)


class Slots:
    """Generations running or waiting for the model, at most `n`: a request beyond them is refused
    (503) rather than held in memory. `take` returns the slot's release (calling it twice is harmless)."""

    def __init__(self, n: int):
        self.n, self.free, self._lock = n, n, threading.Lock()

    def take(self):
        with self._lock:
            if self.free == 0:
                raise ApiError(503, f"the server is busy: {self.n} requests are being answered or waiting; try again shortly",
                               "server_error", code="server_busy")
            self.free -= 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if not released.is_set():
                    released.set()
                    self.free += 1

        return release


class Server:
    """The state behind the app: the serving copy with the head applied, and the learn worker."""

    def __init__(self, seal: Seal, learn_config: LearnConfig | None = None, max_jobs: int = MAX_JOBS,
                 max_requests: int = MAX_REQUESTS):
        self.seal = seal
        self.learn_config = learn_config or LearnConfig()
        self.max_jobs = max_jobs
        self.slots = Slots(max_requests)
        base = seal.lm
        # Its own tokenizer: a fast tokenizer used from two threads at once (the learner's) can fail.
        self.serving = LoadedModel(model=copy.deepcopy(base.model), tokenizer=copy.deepcopy(base.tokenizer), name=base.name,
                                   path=base.path, checksum=base.checksum)
        self.context = getattr(self.serving.model.config, "max_position_embeddings", None)
        self._counter, self._counting = copy.deepcopy(base.tokenizer), threading.Lock()  # token counts, outside the model's lock
        # The serving copy is this generator's alone, so the chain it last served stays applied.
        self.generator = HFGenerator(self.serving, resident=True)
        self.lock = threading.Lock()  # held by every generation and by a head switch
        self.learning = threading.Lock()  # held by the worker through a learn and its head switch
        self.jobs: dict[str, Job] = {}
        self.jobs_dir = seal.store.root / "jobs"
        self.notes: list[str] = []  # what loading the jobs found, for the CLI to print as warnings
        self._queue: queue.Queue[tuple[Job, str] | None] = queue.Queue()
        self._submitting = threading.Lock()
        self._closed = threading.Event()
        for job, text in _load_jobs(self.jobs_dir, seal, self.notes):
            self.jobs[job.id] = job
            if job.status == "queued":
                self._queue.put((job, text))
        self._ids = itertools.count(max((_job_number(j) for j in self.jobs), default=0) + 1)
        with self.lock:
            self.generator.preload(self._chain(seal.store.head if seal.store.exists else 0))
        self._worker = threading.Thread(target=self._work, daemon=True)
        self._worker.start()

    def close(self, timeout: float | None = None) -> None:
        """Stop the worker after the job it is running; the jobs still queued stay queued on disk."""
        self._closed.set()
        self._queue.put(None)
        self._worker.join(timeout)

    def _chain(self, version: int) -> list:
        return self.seal.store.adapter_dirs(version) if version else []

    def resolve(self, name) -> int:
        head = self.seal.store.head if self.seal.store.exists else 0
        if name is not None and not isinstance(name, str):
            raise ApiError(400, "model must be a string (GET /v1/models lists them)", param="model")
        if name in (None, "", "seal-head", "seal"):
            return head
        if name == "seal-base":
            return 0
        if name.startswith("seal-v") and name[6:].isascii() and name[6:].isdigit() and len(name) < 16:  # not "seal-v²"
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
    def count(self, text: str) -> int:
        with self._counting:
            return len(self._counter(text, add_special_tokens=False)["input_ids"])

    def fit(self, prompt: str, sampling: Sampling, param: str) -> int:
        """The prompt's tokens, refused (400) when they and max_tokens do not fit the model's positions."""
        n = self.count(prompt)
        if self.context and n + sampling.max_new_tokens > self.context:
            raise ApiError(400, f"this model's context is {self.context} tokens, but {n + sampling.max_new_tokens} were asked "
                           f"for ({n} in the {param}, max_tokens {sampling.max_new_tokens}); shorten the {param} or lower max_tokens",
                           param=param, code="context_length_exceeded")
        return n

    def complete(self, version: int, prompt: str, sampling: Sampling) -> str:
        with self.lock:
            return self.generator.generate([prompt], adapters=self._chain(version), sampling=sampling)[0][0]

    def stream(self, version: int, prompt: str, sampling: Sampling):
        """Pieces of one completion, holding the model until the iterator ends or is closed."""
        with self.lock:
            yield from self.generator.stream(prompt, adapters=self._chain(version), sampling=sampling)

    def after_commit(self) -> None:
        """A learn or rollback moved the head: serve it from the next request on."""
        with self.lock:
            self.generator.preload(self._chain(self.seal.store.head))

    def rollback(self, version: int) -> int:
        """Make `version` the head; 409 while a learn runs (or another process writes to the store)."""
        if not self.learning.acquire(blocking=False):
            raise ApiError(409, "a learn job is running: roll back when it has finished (GET /v1/learn/ID)", param="version",
                           code="busy")
        try:
            old = self.seal.rollback(version)
        except UsageError as e:  # no such version
            raise ApiError(400, str(e), param="version") from None
        except SealError as e:  # the store is busy or the version damaged: the store's state, not the request
            raise ApiError(409, str(e), param="version", code="conflict") from None
        finally:
            self.learning.release()
        self.after_commit()
        return old

    # -- learning --------------------------------------------------------------------------------
    def submit(self, text: str, title: str) -> Job:
        with self._submitting:
            waiting = self._queue.qsize()
            if waiting >= self.max_jobs:
                raise ApiError(429, f"{waiting} learn jobs are already waiting (this server takes {self.max_jobs}); "
                               "submit again when some have finished", "rate_limit_error", code="queue_full")
            job = Job(id=f"learn-{next(self._ids)}-{uuid.uuid4().hex[:8]}", title=title)
            try:
                _save_job(self.jobs_dir, job, text)
            except OSError as e:
                raise ApiError(503, f"the learn job could not be recorded in the store: {e}", "server_error") from None
            self.jobs[job.id] = job
            self._queue.put((job, text))
        return job

    def _work(self) -> None:
        while (item := self._queue.get()) is not None and not self._closed.is_set():
            job, text = item
            with self.learning:
                self._learn(job, text)

    def _learn(self, job: Job, text: str) -> None:
        job.status = "running"
        try:
            _save_job(self.jobs_dir, job, text)  # so that a restart knows it was running
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
        try:
            _save_job(self.jobs_dir, job, None)
        except OSError as e:  # the outcome is in memory and in the store; only its record is missing
            job.note = f"its record could not be written: {e}"


def _job_number(job_id: str) -> int:
    part = job_id.split("-")[1] if job_id.count("-") == 2 else ""
    return int(part) if part.isdigit() and len(part) < 12 else 0


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


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, read as it arrives and refused (413) as soon as it passes `limit` bytes, whatever
    Content-Length says (a chunked body has none); the 413 closes the connection, so the rest of
    the body is never read."""
    too_large = ApiError(413, f"request body over {limit} bytes", code="request_too_large", headers={"Connection": "close"})
    length = request.headers.get("content-length", "")
    if length.isdigit() and (len(length) > 18 or int(length) > limit):
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    request._body = body = b"".join(chunks)  # what request.form() parses: Starlette reads `_body` when it is set
    return body


def _parse_json(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
        json.dumps(body, ensure_ascii=False).encode("utf-8")  # a lone surrogate (\ud800) is not text
    except UnicodeEncodeError:  # before ValueError, its base class
        raise ApiError(400, "the body holds invalid Unicode (a lone surrogate escape)") from None
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested past Python's stack
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def _document(text, title) -> tuple[str, str]:
    """A posted document, refused as `seal learn` refuses a file: empty, binary (a NUL byte)."""
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "text must be a non-empty string", param="text")
    if not isinstance(title, str):
        raise ApiError(400, "title must be a string", param="title")
    if "\0" in text[:8192]:
        raise ApiError(400, "binary text (a NUL byte), expected a document", param="text")
    return text, title


def _upload_text(data: bytes, name: str) -> str:
    """An uploaded file's text, by the CLI's rules (suffix, binary, UTF-8)."""
    if Path(name).suffix.lower() not in DOCUMENT_SUFFIXES:
        raise ApiError(400, f"unsupported file type {Path(name).suffix or '(none)'}: {name!r} (expected .txt or .md)", param="file")
    try:
        return decode_text(data, repr(name))
    except SealError as e:
        raise ApiError(400, str(e), param="file") from None


def _chunk(kind: str, rid: str, model: str, text: str | None, finish: str | None, role: bool = False) -> str:
    """One server-sent event of a streamed completion (the first chat one carries the role)."""
    if kind == "chat":
        delta = ({"role": "assistant"} if role else {}) | ({"content": text} if text is not None else {})
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "finish_reason": finish}
        obj = "text_completion"
    return "data: " + json.dumps({"id": rid, "object": obj, "created": int(time.time()), "model": model,
                                  "choices": [choice]}) + "\n\n"


async def _events(server: Server, kind: str, model: str, version: int, prompt: str, sampling: Sampling):
    """The events of one streamed completion. Each piece is decoded in a worker thread (the event
    loop keeps serving); however this ends, a client gone mid-way included, the generation is
    closed here: it stops at the next token and releases the model."""
    rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:12]}"
    pieces, end = server.stream(version, prompt, sampling), object()
    try:
        if kind == "chat":
            yield _chunk(kind, rid, model, "", None, role=True)
        text, finish = "", "length"
        while finish != "stop" and (piece := await anyio.to_thread.run_sync(next, pieces, end)) is not end:
            before = len(text)
            text, finish = _trim(text + piece, sampling.stop)
            if len(text) > before:
                yield _chunk(kind, rid, model, text[before:], None)
        yield _chunk(kind, rid, model, None, "stop")
        yield "data: [DONE]\n\n"
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(pieces.close)


class GenerationStream(StreamingResponse):
    """A streamed completion that closes its events and gives its slot back however the response
    ends: when the client goes away, now, not whenever the garbage collector gets to them."""

    def __init__(self, events, release):
        super().__init__(events, media_type="text/event-stream")
        self.release = release

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()
            self.release()


def create_app(server: Server, api_key: str | None = None, host: str = "127.0.0.1", max_body: int = 1 << 20):
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title="seal", docs_url=None, redoc_url=None, openapi_url=None)
    open_reads = host in LOCAL_HOSTS  # beyond localhost every endpoint needs the key

    @app.exception_handler(ApiError)
    async def _api_error(_request, e: ApiError):
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

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
            raise ApiError(403, "learning and rollback need a key: start `seal serve` with SEAL_API_KEY=KEY set (or --api-key KEY)",
                           "permission_error")
        if request.headers.get("authorization", "") != f"Bearer {api_key}":
            raise ApiError(401, "missing or wrong API key (Authorization: Bearer KEY)", "authentication_error",
                           code="invalid_api_key")

    async def read_json(request: Request) -> dict:
        return _parse_json(await _read_body(request, max_body))

    async def answer(kind: str, body: dict, prompt: str, param: str):
        """A completion, or its stream: a slot taken (503 when none is free) and the prompt fitted
        to the model's context (400) before anything is generated."""
        model, version, sampling = body.get("model") or "seal-head", server.resolve(body.get("model")), _sampling(body)
        release, streaming = server.slots.take(), None
        try:
            n_prompt = await _run(server.fit, prompt, sampling, param)
            if body.get("stream"):
                streaming = GenerationStream(_events(server, kind, model, version, prompt, sampling), release)
                return streaming
            text, finish = _trim(await _run(server.complete, version, prompt, sampling), sampling.stop)
        finally:
            if streaming is None:
                release()
        n_out = await _run(server.count, text)
        if finish == "length" and n_out < sampling.max_new_tokens:
            finish = "stop"
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish} if kind == "chat"
                  else {"index": 0, "text": text, "finish_reason": finish})
        return {"id": f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:12]}",
                "object": "chat.completion" if kind == "chat" else "text_completion", "created": int(time.time()),
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
        tok = server.serving.tokenizer
        if getattr(tok, "chat_template", None):
            prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            prompt = "\n\n".join(m["content"] for m in messages) + "\n\n"
        return await answer("chat", body, prompt, "messages")

    @app.post("/v1/completions")
    async def completions(request: Request):
        check_auth(request, writes=False)
        body = await read_json(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise ApiError(400, "prompt must be a non-empty string", param="prompt")
        return await answer("text", body, prompt, "prompt")

    async def read_upload(request: Request) -> tuple[str, str]:
        """A document uploaded as multipart/form-data: field `file` (.txt/.md, UTF-8), optional
        `title` (else the first Markdown heading, else the file name)."""
        await _read_body(request, max_body)  # the size limit first; the form is parsed from the read body
        try:
            form = await request.form()
        except Exception:
            raise ApiError(400, "the body is not valid multipart/form-data") from None
        upload, title = form.get("file"), form.get("title")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "a multipart upload needs a file field named 'file'", param="file")
        name = upload.filename or ""
        text = _upload_text(await upload.read(), name)
        return text, title if isinstance(title, str) and title else file_title(name)

    @app.post("/v1/learn")
    async def learn(request: Request):
        check_auth(request, writes=True)
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            text, title = await read_upload(request)
        else:
            body = await read_json(request)
            text, title = body.get("text"), body.get("title", "")
        job = await _run(server.submit, *_document(text, title))
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
        return {"head": v, "previous": await _run(server.rollback, v)}

    return app


async def _run(fn, *args):
    """Run a blocking call (generation, a file written) in a worker thread so the event loop keeps serving."""
    return await anyio.to_thread.run_sync(fn, *args)
