"""Optional LLM judge: asks any OpenAI-compatible chat model whether a prediction matches the
gold answer, lenient to extra words as in the paper. An unparseable reply is recorded as "not
judged"; a request that fails stops the run (its trial is not recorded, so a rerun retries it),
never counted as a wrong answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from seal.core.remote import ChatEndpoint, RemoteError
from seal.core.runtime import RuntimeFailure

JUDGE_PROMPT = (
    "You grade answers to quiz questions.\n"
    "Question: {question}\nGold answer: {gold}\nStudent answer: {prediction}\n\n"
    "Does the student answer contain the gold answer or say the same thing, even with extra words? "
    "Reply with exactly one word: yes or no."
)


@dataclass
class Verdict:
    correct: bool | None  # None: not judged (network error or unparseable reply)
    raw: str = ""
    error: str = ""


def parse_verdict(reply: str) -> bool | None:
    """First yes/no word of the reply; None when it has neither (or both, ambiguously first)."""
    m = re.search(r"\b(yes|no)\b", reply.strip().lower())
    return None if m is None else m.group(1) == "yes"


class LLMJudge:
    def __init__(self, endpoint: ChatEndpoint):
        self.endpoint = endpoint

    def __call__(self, question: str, gold: str, prediction: str) -> Verdict:
        if not prediction.strip():
            return Verdict(False, "", "")
        msg = JUDGE_PROMPT.format(question=question, gold=gold, prediction=prediction)
        try:
            reply = self.endpoint.complete([{"role": "user", "content": msg}], max_tokens=4)
        except RemoteError as e:  # a judge that cannot be reached stops the run; a rerun retries
            raise RuntimeFailure(f"judge request failed: {e}") from None
        verdict = parse_verdict(reply)
        return Verdict(verdict, reply, "" if verdict is not None else "unparseable reply")
