"""How many tokens a prompt takes, counted before anything is queued.

Two counters, both taking the whole message list a contender will be sent:

- the local engine's contenders: the real count, with the SmolLM2 tokenizer
  and chat template the local engine prefills with (exact: the same rendered
  text, the same token ids);
- every other engine (vLLM and the other OpenAI-compatible servers, whose
  tokenizer is unknown here): an upper bound from UTF-8 bytes.

Why bytes bound tokens: a byte-level BPE tokenizer (GPT-2, Llama 3, Qwen,
SmolLM2, most current models) encodes text as UTF-8 bytes and each token
covers at least one of them; a SentencePiece tokenizer's pieces cover at least
one character (at least one byte) and its byte-fallback tokens exactly one
byte. So a text never takes more tokens than its bytes, once normalised:
tokenizers may normalise first (NFC, NFKC, ...), and normalising can lengthen
a text (NFKC turns U+FDFA's 3 bytes into 33), so the bound takes the longest
of the text's Unicode forms. On top of that, each message gets a fixed
overhead (a template's role markers and separators: 5 tokens in ChatML,
Llama 3's or Gemma's; a SentencePiece dummy prefix), and each prompt a fixed
overhead (BOS, the generation prompt, a template's own default system prompt
such as Llama 3.1's date header, about 30 tokens). A template that injects
long text of its own (tool definitions, say) is not covered.

The local tokenizer is loaded lazily, once per process, without torch (the
`tokenizers` library and transformers' own template renderer: about 100 MB,
where AutoTokenizer pulls torch in, about 360 MB), from the converted model
folder the local engine loads, or once from the GGUF file when no engine has
converted it yet.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from django.conf import settings

from inference.engines.base import Message, special_tokens_defused
from inference.engines.imports import LOCAL_ENGINE, ml_import
from inference.engines.local import DEFAULT_MODEL, GGUF_FILE, gguf_package_dir
from inference.models import Contender, Engine

log = logging.getLogger(__name__)

PromptCounter = Callable[[Sequence[Message]], int]

MESSAGE_OVERHEAD_TOKENS = 8
PROMPT_OVERHEAD_TOKENS = 64
# A RAG contender's passages are retrieved by the worker, after the message
# was accepted; their room is reserved from the knowledge base's chunk size
# at a typical three characters a token (SmolLM2 on English: about 4.5).
PASSAGE_CHARS_PER_TOKEN = 3
PASSAGES_TEMPLATE_TOKENS = 200

_FORMS: tuple[Literal["NFC", "NFD", "NFKC", "NFKD"], ...] = ("NFC", "NFD", "NFKC", "NFKD")


def _text_bytes(text: str) -> int:
    if text.isascii():  # every normal form of ASCII is itself
        return len(text)
    return max(
        len(form.encode("utf-8", "surrogatepass"))
        for form in (text, *(unicodedata.normalize(f, text) for f in _FORMS))
    )


def bytes_bound(messages: Sequence[Message]) -> int:
    """At least the tokens any byte-level BPE or SentencePiece tokenizer,
    with a usual chat template, makes of `messages` (see the module's notes)."""
    content = sum(_text_bytes(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)
    return PROMPT_OVERHEAD_TOKENS + content


class _ChatTokenizer:
    """A tokenizer folder's tokenizer.json and chat template, rendered the way
    transformers' `apply_chat_template` renders them."""

    def __init__(self, folder: Path) -> None:
        ml_import(("tokenizers", "transformers.utils.chat_template_utils"))
        from tokenizers import Tokenizer
        from transformers.utils.chat_template_utils import render_jinja_template

        config = json.loads((folder / "tokenizer_config.json").read_text())
        template_file = folder / "chat_template.jinja"
        self.template: str = (
            template_file.read_text() if template_file.exists() else config["chat_template"]
        )
        # What apply_chat_template gives the template besides the messages.
        self.special: dict[str, Any] = {
            key: value["content"] if isinstance(value, dict) else value
            for key, value in config.items()
            if key.endswith("_token") and isinstance(value, str | dict)
        }
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.specials = [t.content for t in self.tokenizer.get_added_tokens_decoder().values()]
        self.render: Callable[..., Any] = render_jinja_template

    def count(self, messages: Sequence[Message]) -> int:
        defused = special_tokens_defused(messages, self.specials)  # as the engine does
        rendered, _ = self.render(
            conversations=[[dict(m) for m in defused]],
            chat_template=self.template,
            add_generation_prompt=True,
            **self.special,
        )
        # encode() only reads the tokenizer: threads may share it.
        return len(self.tokenizer.encode(rendered[0], add_special_tokens=False).ids)


def _tokenizer_from_gguf(target: Path) -> Path:
    """A tokenizer-only folder from the default model's GGUF file (once per
    model cache, when the local engine has not converted the model yet)."""
    ml_import(LOCAL_ENGINE)
    from transformers import AutoTokenizer

    log.info("extracting the default model's tokenizer into %s", target)
    tokenizer = AutoTokenizer.from_pretrained(gguf_package_dir(), gguf_file=GGUF_FILE)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)  # atomic: a concurrent extraction either wins or loses whole
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def local_tokenizer_dir(cache: Path) -> Path:
    """Where the local engine's tokenizer is: the converted model, else a
    tokenizer-only folder beside it."""
    converted = cache / DEFAULT_MODEL
    if (converted / "tokenizer.json").exists():
        return converted
    alone = cache / f"{DEFAULT_MODEL}-tokenizer"
    if (alone / "tokenizer.json").exists():
        return alone
    return _tokenizer_from_gguf(alone)


_lock = threading.Lock()
_local: _ChatTokenizer | None = None
_local_failed = False


def _local_tokenizer() -> _ChatTokenizer | None:
    """The local tokenizer, loaded once; None when it cannot be (the model
    package missing, a damaged cache), tried once per process."""
    global _local, _local_failed
    with _lock:
        if _local is None and not _local_failed:
            try:
                _local = _ChatTokenizer(local_tokenizer_dir(settings.ARENA_MODEL_CACHE))
            except Exception:
                # The answers will fail with the engine's own error; the message
                # is still measured, by the bound (at least the real count).
                log.exception("the local tokenizer did not load; counting by UTF-8 bytes")
                _local_failed = True
        return _local


def local_count(messages: Sequence[Message]) -> int:
    """The tokens the local engine prefills for `messages` (its chat template,
    with the generation prompt)."""
    tokenizer = _local_tokenizer()
    if tokenizer is None:
        return bytes_bound(messages)
    try:
        return tokenizer.count(messages)
    except (UnicodeError, TypeError):  # tokenizers' TypeError: a lone surrogate
        # No tokenizer takes it (the consumer refuses it as bad_field); the bound holds.
        return bytes_bound(messages)


def prompt_counter(contender: Contender) -> PromptCounter:
    """How to count `contender`'s prompts: exactly where its tokenizer is
    local, else an upper bound."""
    if contender.engine == Engine.LOCAL:
        return local_count
    return bytes_bound


def passages_reserve(contender: Contender) -> int:
    """Tokens kept free for a RAG contender's passages (0 without a knowledge base)."""
    kb = contender.knowledge_base
    if kb is None:
        return 0
    k = contender.rag_k or kb.top_k
    per_passage = kb.chunk_size // PASSAGE_CHARS_PER_TOKEN + MESSAGE_OVERHEAD_TOKENS
    return k * per_passage + PASSAGES_TEMPLATE_TOKENS


def max_tokens_fit(*, context_window: int, prompt_tokens: int, max_tokens: int) -> int:
    """`max_tokens` clipped so the prompt and the answer fit the context window.
    At least 1: a prompt that fills the window alone was refused when it was
    sent; only a window shrunk by an admin afterwards gets here."""
    room = context_window - prompt_tokens
    if room < 1:
        log.warning("a prompt of %d tokens fills a %d-token window", prompt_tokens, context_window)
    return max(1, min(max_tokens, room))
