"""ReST-EM sampling and trials on a Ray cluster (`seal train --executor ray`, extra `seal[ray]`).

Each worker is a long-lived actor that builds the domain once (from the domain's worker recipe:
for knowledge, loading the base model) and runs jobs on it (`run_job`, the same function the
local executor calls: sampling an item's k self-edits, or one trial). Generator links are sent as
their `adapter_*` files. The
driver keeps selection, SFT and every record: a result is appended to `samples.jsonl` or
`trials.jsonl` only when the driver receives it, so a job is never counted twice. A worker that
dies mid-job (killed, out of memory, node lost) is replaced by a fresh actor and its job is put
back at the head of the queue, a bounded number of times. Jobs carry their own seeds, so the
records equal the local executor's.
"""

from __future__ import annotations

import os
from collections import Counter, deque
from pathlib import Path

from seal.core.runtime import SealError


def _import_ray():
    try:
        import ray
    except ImportError:
        raise SealError("the Ray executor needs Ray: pip install 'seal[ray]' (or pip install ray)") from None
    return ray


class _TrialWorker:
    """One domain (and model) per process, built here from the driver's domain's worker recipe."""

    def __init__(self, factory, kwargs: dict, threads: int):
        import torch

        from seal.core.runtime import quiet_libraries

        quiet_libraries()
        torch.set_num_threads(max(1, threads))
        self.domain = factory(**kwargs)

    def pid(self) -> int:
        return os.getpid()

    def run(self, generator: tuple, item, job, context):
        from seal.rl.rest_em import run_job

        return run_job(self.domain, item, job, context, self._use_generator(*generator))

    def _use_generator(self, key: str, adapters: list) -> list[Path]:
        """The generator's adapters as local folders: written (sent as bytes: a worker on another
        node does not see the driver's disk) once per generator."""
        if getattr(self, "_generator_key", None) == key:
            return self._generator
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="seal-generator-"))
        paths = []
        for name, files in adapters:
            (root / name).mkdir()
            for fname, data in files.items():
                (root / name / fname).write_bytes(data)
            paths.append(root / name)
        self._generator, self._generator_key = paths, key
        return paths


class RayExecutor:
    """Runs sampling and trial jobs on Ray actors; `address=None` starts a local cluster, "auto" or
    "ray://host:10001" joins one. `trial_gpus` may be fractional (several workers per GPU)."""

    def __init__(self, address: str | None = None, workers: int | None = None, trial_cpus: float = 1.0,
                 trial_gpus: float = 0.0, max_retries: int = 3):
        if trial_cpus <= 0 or trial_gpus < 0:
            raise SealError("--trial-cpus must be > 0 and --trial-gpus >= 0")
        self.address, self.n_workers = address, workers
        self.trial_cpus, self.trial_gpus, self.max_retries = trial_cpus, trial_gpus, max_retries
        self.retries = 0  # jobs resubmitted after a worker died
        self._ray = None
        self._started = False
        self._workers: list = []
        self._domain_key = None

    # -- cluster and workers ---------------------------------------------------------------
    def _connect(self):
        if self._ray is None:
            ray = _import_ray()
            if not ray.is_initialized():
                kwargs = dict(include_dashboard=False, logging_level="warning", configure_logging=True)
                if self.address is None:  # a local cluster on this machine; objects here are small
                    kwargs["object_store_memory"] = 256 * 1024 * 1024
                try:
                    ray.init(address=self.address, **kwargs)
                except (ConnectionError, RuntimeError, ValueError) as e:
                    raise SealError(f"cannot start or join the Ray cluster ({self.address or 'local'}): {e}") from e
                self._started = True
            self._ray = ray
        return self._ray

    def _worker_count(self) -> int:
        if self.n_workers:
            return self.n_workers
        res = self._ray.cluster_resources()
        if self.trial_gpus > 0:
            n = int(res.get("GPU", 0) / self.trial_gpus)
            if n == 0:
                raise SealError(f"--trial-gpus {self.trial_gpus} asked for, but the Ray cluster has no GPU")
            return n
        return max(1, int(res.get("CPU", 1) / self.trial_cpus))

    def _new_worker(self, recipe):
        actor = self._ray.remote(num_cpus=self.trial_cpus, num_gpus=self.trial_gpus, max_restarts=0)(_TrialWorker)
        factory, kwargs = recipe
        return actor.remote(factory, kwargs, int(self.trial_cpus))

    def _ensure_workers(self, recipe) -> list:
        key = repr(recipe)
        if self._domain_key != key:
            self._kill_workers()
            self._workers = [self._new_worker(recipe) for _ in range(self._worker_count())]
            try:  # surface a model that cannot load as one clear error, not as retries
                self._ray.get([w.pid.remote() for w in self._workers])
            except self._ray.exceptions.RayError as e:
                raise SealError(f"a Ray worker could not build its domain: {str(e).strip().splitlines()[-1]}") from e
            self._domain_key = key
        return self._workers

    def worker_pids(self) -> list[int]:
        return self._ray.get([w.pid.remote() for w in self._workers])

    def _kill_workers(self) -> None:
        for w in self._workers:
            self._ray.kill(w)
        self._workers = []

    def close(self) -> None:
        if self._ray is not None:
            self._kill_workers()
            if self._started:
                self._ray.shutdown()
        self._ray = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the Executor contract -------------------------------------------------------------
    def run(self, domain, items, jobs, contexts, generator=()):
        ray = self._connect()
        recipe = domain.worker_recipe()
        workers = self._ensure_workers(recipe)
        generator = ray.put((repr([str(p) for p in generator]), [
            (p.name, {f.name: f.read_bytes() for f in sorted(p.iterdir()) if f.name.startswith("adapter_")})
            for p in generator]))
        queue, pending, idle, attempts = deque(jobs), {}, list(range(len(workers))), Counter()

        def fill():
            while idle and queue:
                w, job = idle.pop(), queue.popleft()
                ref = workers[w].run.remote(generator, items[job.item_id], job, contexts.get(job.item_id, {}))
                pending[ref] = (job, w)

        lost = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)
        fill()
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            job, w = pending.pop(ref)
            try:
                result = ray.get(ref)
            except lost as e:
                attempts[job.key] += 1
                if attempts[job.key] > self.max_retries:
                    raise SealError(f"job {job.key} lost its Ray worker {attempts[job.key]} times; giving up") from e
                self.retries += 1
                workers[w] = self._new_worker(recipe)
                queue.appendleft(job)
                idle.append(w)
                fill()
                continue
            except ray.exceptions.RayTaskError as e:
                raise SealError(f"job {job.key} failed on a Ray worker: {str(e).strip().splitlines()[-1]}") from e
            idle.append(w)
            fill()  # keep the workers busy while the caller writes the record
            yield job, result
