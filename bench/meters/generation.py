"""What a decoder LM's user waits for: time to first token (the prefill), time per output token (each cached decode
step), and generated tokens/s at the evaluation batch size. CPU and CUDA, with windows.py's conventions: CUDA events
on GPU and perf_counter on CPU (`time_call_ms`), warm-up calls left out, p50/p95 with numpy's interpolation, and
`torch.inference_mode`.

Batch-1 latency runs a manual greedy loop (`manual-cache`) so that prefill and decode are timed apart: one forward
over the prompt with `use_cache=True` and the arg-max of its last logits, then one single-token forward a step with
the returned cache. It yields exactly `generate(do_sample=False)`'s tokens (tests/test_generation_meters.py), for a
plain model and for peft ones. peft's `forward` serves a cached decode step for the methods that change weights or
activations (LoRA, AdaLoRA, IA3, ...) but not for the prompt methods: prompt tuning and P-tuning prepend their virtual
tokens to every call, and prefix tuning replaces `past_key_values` with its prefix on every call. For those
(PROMPT_TUNING, P_TUNING, PREFIX_TUNING) the prefill goes through peft's `forward`, which injects the virtual tokens
or the prefix into the cache, and the decode steps call the base model with that cache: what peft's own `generate`
does. Other prompt-learning types (multitask prompt tuning, CPT, ...) fall back to timing `generate` (`generate`).
"""
from __future__ import annotations

import inspect
import time

import torch

from bench.meters.windows import percentile, synchronize, time_call_ms

# peft prompt-learning types whose prefill is peft's forward and whose decode steps are the base model's forward.
MANUAL_PROMPT_TYPES = {"PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING"}


def overhead_pct(adapted_ms: float, base_ms: float) -> float:
    """What the adapter adds to a time, in percent of the base model's: 100 * (adapted - base) / base."""
    if base_ms <= 0:
        raise ValueError(f"base time must be positive, got {base_ms}")
    return 100.0 * (adapted_ms - base_ms) / base_ms


def prompt_of_length(tokenizer, text: str, length: int) -> list[int]:
    """Exactly `length` token ids: the tokenizer's leading special tokens (a BOS, where it adds one), then the tokens
    of `text` repeated as often as needed and cut, for a TTFT measured at a declared prompt length."""
    if length < 1:
        raise ValueError(f"a prompt needs at least 1 token, got length {length}")
    body = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not body:
        raise ValueError(f"{text!r} has no tokens")
    with_specials = tokenizer(text)["input_ids"]
    lead = with_specials[:len(with_specials) - len(body)] if with_specials[-len(body):] == body else []
    room = max(length - len(lead), 0)
    return (lead + body * (room // len(body) + 1))[:length]


def _prompt_tensor(prompt_ids, device: torch.device) -> torch.Tensor:
    ids = torch.as_tensor(prompt_ids, dtype=torch.long)
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    if ids.dim() != 2 or ids.shape[0] != 1 or ids.shape[1] == 0:
        raise ValueError(f"generation latency takes one non-empty prompt (batch 1), got shape {tuple(ids.shape)}")
    return ids.to(device)


def _peft_type(model) -> str | None:
    """The active peft config's type name for a peft model (duck-typed: no peft import here), else None."""
    config = getattr(model, "active_peft_config", None)
    if config is None:
        return None
    kind = config.peft_type
    return str(getattr(kind, "value", kind))


def _latency_path(model) -> tuple[str, torch.nn.Module]:
    """("manual-cache", the module that runs decode steps) or ("generate", model)."""
    kind = _peft_type(model)
    if kind is None or not model.active_peft_config.is_prompt_learning:
        return "manual-cache", model
    if kind in MANUAL_PROMPT_TYPES:
        return "manual-cache", model.get_base_model()
    return "generate", model


def _keeps_last_logits(model) -> dict:
    """`logits_to_keep=1` where the causal LM takes it, so the prefill projects only the last position onto the
    vocabulary, as `generate` does (SmolLM2's 49k-word head over every prompt position would be a fifth of the
    prefill's FLOPs that no generator spends)."""
    base = model.get_base_model() if _peft_type(model) is not None else model
    try:
        return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(base.forward).parameters else {}
    except (TypeError, ValueError):
        return {}


def _summary(ttft: list[float], tpot: list[float], method: str, prompt_tokens: int, new_tokens: int) -> dict:
    return {"ttft_ms_p50": percentile(ttft, 50), "ttft_ms_p95": percentile(ttft, 95),
            "tpot_ms_p50": percentile(tpot, 50) if tpot else None,
            "tpot_ms_p95": percentile(tpot, 95) if tpot else None,
            "latency_method": method, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens}


@torch.inference_mode()
def greedy_tokens(model, prompt_ids, new_tokens: int, device: torch.device) -> list[int]:
    """The `new_tokens` ids the timed manual loop produces (no EOS stop), for checking it against `generate`."""
    method, decoder = _latency_path(model)
    if method != "manual-cache":
        raise ValueError(f"peft type {_peft_type(model)} has no manual-cache loop")
    ids = _prompt_tensor(prompt_ids, device)
    out: list[torch.Tensor] = []
    _manual_pass(model, decoder, ids, new_tokens, device, _keeps_last_logits(model), None, None, out)
    return torch.cat(out, dim=1)[0].tolist()


def _manual_pass(model, decoder, ids, new_tokens, device, extra, ttft, tpot, tokens=None) -> None:
    """One greedy pass: the prefill (forward over the prompt with a fresh cache, arg-max of the last logits), then
    `new_tokens - 1` cached single-token steps (forward, arg-max). Each call is timed on its own when `ttft`/`tpot`
    are lists. The next token stays on the device (no host copy); CUDA synchronises once per timed call."""
    state: dict = {}

    def prefill():
        out = model(input_ids=ids, use_cache=True, **extra)
        state["cache"], state["next"] = out.past_key_values, out.logits[:, -1, :].argmax(dim=-1, keepdim=True)

    def step():
        out = decoder(input_ids=state["next"], past_key_values=state["cache"], use_cache=True)
        state["cache"], state["next"] = out.past_key_values, out.logits[:, -1, :].argmax(dim=-1, keepdim=True)

    def call(fn, times: list | None) -> None:
        if times is None:
            fn()
        else:
            times.append(time_call_ms(fn, device))
        if tokens is not None:
            tokens.append(state["next"])

    call(prefill, ttft)
    for _ in range(new_tokens - 1):
        call(step, tpot)


@torch.inference_mode()
def generation_latency(model, prompt_ids, new_tokens: int, samples: int, device, warmup: int = 2,
                       method: str = "auto") -> dict:
    """Batch-1 greedy latency with the KV cache, `new_tokens` generated each time whatever they are (never an EOS
    stop), over `samples` timed repetitions of the same prompt after `warmup` untimed ones.

    `prompt_ids`: a list of ids (see `prompt_of_length`) or a (1, L) tensor; moved to `device` before any clock, so
    tokenisation and the host-to-device copy are out of every timing.

    manual-cache (the default wherever it serves, see the module docstring):
    - TTFT = one call: the forward over the prompt with a fresh cache (for prompt methods, peft's injection of the
      virtual tokens or prefix included; only the last position's logits where the model supports it, as
      `generate`) plus the arg-max that picks the first token. Not in it: copying the token to the host, detokenising.
    - TPOT = one decode step: the forward of the previous token with the cache, plus its arg-max. Each step is timed
      on its own, and `tpot_ms_p50`/`_p95` are percentiles over every decode step of every sample (the per-step
      distribution: a slow step shows in p95 rather than being averaged into its sample's mean).
    generate (prompt-learning types without a manual loop, or `method="generate"`):
    - TTFT = `generate(max_new_tokens=1)`; TPOT of a sample = (`generate(max_new_tokens=new_tokens)` - that sample's
      TTFT) / (new_tokens - 1): percentiles over per-sample means, and generate's own per-step work (logits
      processors, stopping checks, the host sync they need) is inside both.

    Returns ttft_ms_p50, ttft_ms_p95, tpot_ms_p50, tpot_ms_p95 (None when new_tokens == 1), latency_method
    ("manual-cache" | "generate"), prompt_tokens and new_tokens. CUDA: events around each timed call and a
    synchronisation after it; CPU: perf_counter.
    """
    if new_tokens < 1 or samples < 1 or warmup < 0:
        raise ValueError(f"need new_tokens >= 1, samples >= 1, warmup >= 0 (got {new_tokens}, {samples}, {warmup})")
    device = torch.device(device)
    ids = _prompt_tensor(prompt_ids, device)
    path, decoder = _latency_path(model)
    if method == "generate":
        path = "generate"
    elif method not in ("auto", "manual-cache"):
        raise ValueError(f"method must be auto, manual-cache or generate, got {method!r}")
    elif method == "manual-cache" and path != "manual-cache":
        raise ValueError(f"peft type {_peft_type(model)} has no manual-cache loop: use method='generate'")
    ttft: list[float] = []
    tpot: list[float] = []
    if path == "manual-cache":
        extra = _keeps_last_logits(model)
        for _ in range(warmup):
            _manual_pass(model, decoder, ids, new_tokens, device, extra, None, None)
        synchronize(device)
        for _ in range(samples):
            _manual_pass(model, decoder, ids, new_tokens, device, extra, ttft, tpot)
    else:
        mask = torch.ones_like(ids)

        def generate(n: int):
            # eos_token_id=None: no EOS stop, every call produces exactly n tokens.
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, do_sample=False,
                                 eos_token_id=None)
            if out.shape[1] - ids.shape[1] != n:
                raise RuntimeError(f"generate stopped after {out.shape[1] - ids.shape[1]} of {n} tokens")

        for _ in range(warmup):
            generate(1)
            generate(new_tokens)
        for _ in range(samples):
            first = time_call_ms(lambda: generate(1), device)
            ttft.append(first)
            if new_tokens > 1:
                tpot.append((time_call_ms(lambda: generate(new_tokens), device) - first) / (new_tokens - 1))
    return _summary(ttft, tpot, path, ids.shape[1], new_tokens)


def _stop_ids(model, pad_token_id: int | None) -> set[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
    if pad_token_id is not None:
        ids.add(pad_token_id)
    return ids


def count_generated(new_ids: torch.Tensor, stop_ids: set[int]) -> int:
    """Tokens a batch's generation produced: per row, those before its first EOS or pad id (the EOS itself and the
    pad `generate` fills a finished row with are not counted). A pad id the model emits as a real word would end its
    row's count too: SmolLM2-style tokenizers pad with their EOS, so it cannot happen there."""
    if new_ids.numel() == 0:
        return 0
    stops = torch.zeros_like(new_ids, dtype=torch.bool)
    for i in stop_ids:
        stops |= new_ids == i
    none = torch.full((new_ids.shape[0],), new_ids.shape[1], dtype=torch.long, device=new_ids.device)
    first = torch.where(stops.any(dim=1), stops.int().argmax(dim=1), none)
    return int(first.sum())


@torch.inference_mode()
def generation_throughput(model, batches, max_new_tokens: int, pad_token_id: int | None, device,
                          warmup: int = 0) -> dict:
    """Generated tokens/s at the evaluation batch size: `model.generate(**batch, max_new_tokens=...,
    do_sample=False)` on each left-padded batch (dicts of input_ids, attention_mask), stopping per sequence at EOS
    as a deployment would.

    In the time (`generation_s`, summed over batches, a device synchronisation at each end of each batch): the whole
    `generate` call (prefill, decode steps, logits processing, stopping checks). Not in it: tokenisation and
    collation (batches come built), moving each batch to the device (done before its clock starts), decoding the ids
    to text, and `warmup` untimed calls on the first batch. `generated_tokens` counts only new tokens actually
    produced (`count_generated`: before each row's first EOS or pad), so a batch whose rows stop early is not
    credited with the pad that fills them. Returns generated_tokens_per_s, generated_tokens, generation_s."""
    device = torch.device(device)
    batches = [{k: v.to(device) if hasattr(v, "to") else v for k, v in b.items() if k != "labels"} for b in batches]
    if not batches:
        raise ValueError("generation throughput needs at least one batch")
    stop = _stop_ids(model, pad_token_id)
    kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False, "pad_token_id": pad_token_id}
    for _ in range(warmup):
        model.generate(**batches[0], **kwargs)
    seconds, tokens = 0.0, 0
    for batch in batches:
        synchronize(device)
        t0 = time.perf_counter()
        out = model.generate(**batch, **kwargs)
        synchronize(device)
        seconds += time.perf_counter() - t0
        tokens += count_generated(out[:, batch["input_ids"].shape[1]:], stop)
    return {"generated_tokens_per_s": tokens / seconds if seconds > 0 else None, "generated_tokens": tokens,
            "generation_s": seconds}
