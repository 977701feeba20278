"""An OpenAI-compatible chat endpoint as the drafting LLM (vLLM, llama.cpp's server, Ollama, TGI, ...).

Spec: ``openai:http://HOST:PORT/v1#MODEL``; the bearer token, if any, comes from ``$HSENET_LLM_API_KEY``.
Requests are greedy (``temperature`` 0, fixed ``seed``) with a per-request timeout; connection errors,
timeouts, 429 and 5xx answers are retried with a growing pause. A server that stays down or refuses the
request is one :class:`~hsenet_search.errors.ModelError` line. Token counts are estimated (4 characters a
token) since the OpenAI API has no tokenizer call; the prompt guard keeps a margin for that.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from hsenet_search.errors import ModelError

PREFIX = "openai:"
_RETRY_STATUS = {429, 500, 502, 503, 504}


@dataclass
class EndpointConfig:
    """Where the endpoint is and how to talk to it (``max_new_tokens``/``context_tokens`` as for local LLMs)."""

    spec: str
    max_new_tokens: int = 256
    context_tokens: int = 2048
    timeout_s: float = 60.0
    retries: int = 2
    seed: int = 0


def parse_spec(spec: str) -> tuple[str, str]:
    """``openai:URL#MODEL`` -> ``(base URL without a trailing slash, model name)``."""
    url, _, model = spec[len(PREFIX) :].partition("#")
    if not url.startswith(("http://", "https://")) or not model:
        raise ModelError("expected openai:http://HOST:PORT/v1#MODEL", spec)
    return url.rstrip("/"), model


class EndpointLLM:
    """The LLM interface of :class:`hsenet_search.generate.llm.LLM`, served over HTTP."""

    def __init__(self, config: EndpointConfig):
        self.config = config
        self.url, self.model = parse_spec(config.spec)
        self.name = f"{self.model} (OpenAI-compatible endpoint {self.url})"
        self.context_tokens = config.context_tokens
        self.last_usage: dict = {}

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    def prompt_budget(self, max_new_tokens: int | None = None, shots: int = 0) -> int:
        new = self.config.max_new_tokens if max_new_tokens is None else max_new_tokens
        return int(0.8 * (self.context_tokens - new))  # margin for the estimate and the chat template

    def chat(
        self,
        system: str,
        user: str,
        *,
        examples: Sequence[tuple[str, str]] = (),
        max_new_tokens: int | None = None,
        prefill: str = "",
        one_line: bool = False,
    ) -> str:
        """The assistant's reply (arguments as for the local LLM). ``prefill`` cannot be forced over this API;
        it is asked for in the user turn. ``one_line`` keeps the first line of text of the answer."""
        if prefill:
            user = f"{user}\nStart your answer with '{prefill}'."
        from .prompt import chat_messages

        body = {
            "model": self.model,
            "temperature": 0,
            "seed": self.config.seed,
            "max_tokens": self.config.max_new_tokens if max_new_tokens is None else max_new_tokens,
            "messages": chat_messages(system, examples, user),
        }
        start = time.perf_counter()
        answer = self._post("/chat/completions", body)
        try:
            text = answer["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise ModelError("the endpoint's answer has no choices[0].message.content", self.url) from exc
        usage = answer.get("usage") or {}
        self.last_usage = {
            "prompt_tokens": usage.get("prompt_tokens"),
            "new_tokens": usage.get("completion_tokens"),
            "seconds": time.perf_counter() - start,
        }
        text = text[len(prefill) :] if prefill and text.startswith(prefill) else text
        return text.strip().split("\n", 1)[0] if one_line else text

    def _post(self, path: str, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if token := os.environ.get("HSENET_LLM_API_KEY"):
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url + path, json.dumps(body).encode(), headers, method="POST")
        for attempt in range(self.config.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                if exc.code not in _RETRY_STATUS or attempt == self.config.retries:
                    detail = exc.read()[:200].decode("utf-8", "replace").replace("\n", " ")
                    raise ModelError(f"the endpoint answered HTTP {exc.code}: {detail}", self.url) from exc
                problem = f"HTTP {exc.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                problem = str(getattr(exc, "reason", exc))
                if attempt == self.config.retries:
                    raise ModelError(
                        f"the LLM endpoint is unreachable after {attempt + 1} tries ({problem})", self.url
                    ) from exc
            except json.JSONDecodeError as exc:
                raise ModelError("the endpoint's answer is not JSON", self.url) from exc
            time.sleep(0.5 * 2**attempt)
        raise ModelError(f"the LLM endpoint failed ({problem})", self.url)
