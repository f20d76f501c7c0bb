"""Load on `seal serve`: chat requests per second and latency with 1 and C concurrent clients,
without and with a learn job running, and the time from posting a document to its commit.

    python benchmarks/serve_load.py --requests 40 --clients 8 --store /tmp/serve-store [--model PATH]

It starts `seal serve` in a subprocess on a free port (a fresh store is best: the learn job adds
a version), drives it with the official openai client and prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai

DOCUMENT = ("The Volthaven heat pump in Tromso was switched on in March 2026. It cost 214 million kroner and "
            "heats 4,100 homes. The engineer Ingrid Solberg designed its seawater intake.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def burst(client, n: int, clients: int, max_tokens: int) -> dict:
    def one(_i):
        t0 = time.perf_counter()
        client.chat.completions.create(model="seal-head", max_tokens=max_tokens,
                                       messages=[{"role": "user", "content": "What is the capital of France?"}])
        return time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        lat = sorted(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    return {"requests": n, "clients": clients, "rps": round(n / wall, 3), "p50_s": round(statistics.median(lat), 3),
            "p95_s": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--store", required=True)
    ap.add_argument("--model", default=None)
    a = ap.parse_args()
    port, key = free_port(), "bench"
    cmd = [sys.executable, "-m", "seal.cli", "serve", "--port", str(port), "--store", a.store]
    if a.model:
        cmd += ["--model", a.model]
    proc = subprocess.Popen(cmd, env={**os.environ, "SEAL_API_KEY": key}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        while True:
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if proc.poll() is not None:
                    sys.exit("seal serve exited")
                time.sleep(0.5)
        client = openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=3600)
        out = {"idle": [burst(client, a.requests, 1, a.max_tokens), burst(client, a.requests, a.clients, a.max_tokens)]}
        headers = {"Authorization": f"Bearer {key}"}
        t0 = time.perf_counter()
        job = httpx.post(f"{url}/learn", json={"title": "Tromso heat pump", "text": DOCUMENT}, headers=headers).json()
        out["learning"] = [burst(client, a.requests, 1, a.max_tokens), burst(client, a.requests, a.clients, a.max_tokens)]
        while (status := httpx.get(f"{url}/learn/{job['id']}", headers=headers).json())["status"] in ("queued", "running"):
            time.sleep(1)
        out["learn"] = {"status": status["status"], "post_to_commit_s": round(time.perf_counter() - t0, 1),
                        "guard": (status.get("guard") or {}).get("decision")}
        print(json.dumps(out, indent=2))
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
