"""A minimal client for OpenAI-compatible chat endpoints (OpenAI, vLLM, llama.cpp server), on
the standard library only. Used by the optional LLM judge and the `teacher` condition.

Network errors are retried a bounded number of times and then raised as RemoteError; callers stop
the run with that one line (a rerun retries), never count it as a wrong answer or a missing
self-edit. Credentials inside the URL are never repeated in messages.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from seal.core.runtime import redact_url


class RemoteError(Exception):
    pass


@dataclass
class ChatEndpoint:
    url: str  # base URL, e.g. http://localhost:8000/v1
    model: str
    api_key_env: str = "OPENAI_API_KEY"  # name of the environment variable holding the key
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 1.0

    def complete(self, messages: list[dict], max_tokens: int = 256, temperature: float = 0.0) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}).encode()
        parts = urllib.parse.urlsplit(self.url.rstrip("/") + "/chat/completions")
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))  # urllib can't take user:key@
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        elif parts.username is not None:  # credentials in the URL: HTTP basic authentication
            userinfo = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(userinfo.encode()).decode()
        last = "no attempt"
        for attempt in range(self.retries):
            try:
                req = urllib.request.Request(url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read())["choices"][0]["message"]["content"] or ""
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
                if e.code < 500 and e.code != 429:
                    break  # a client error will not get better by retrying
            except (urllib.error.URLError, TimeoutError, OSError, KeyError, IndexError, json.JSONDecodeError) as e:
                last = f"{type(e).__name__}: {e}"
            time.sleep(self.backoff * 2**attempt)
        raise RemoteError(f"{redact_url(url)}: {last} after {attempt + 1} attempt(s)")
