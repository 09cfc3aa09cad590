"""Decoder-LM generation meters (bench/meters/generation.py) on the tiny random Llama, CPU: the timed manual greedy
loop yields generate's tokens (plain, LoRA, and peft's prompt methods), percentiles, the generate fallback, EOS-aware
token counting and the overhead arithmetic."""
from types import SimpleNamespace

import pytest
import torch

from bench.meters import generation as gen

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

DEVICE = torch.device("cpu")
TEXT = "review : great movie sentiment :"
PROMPT_LEN, NEW = 8, 10


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on a busy 2-core machine two threads waiting on each other turned a 0.7 ms forward into
    30 ms at random, and the timing checks into noise."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def folder():
    from suites.smoke_llm import tiny_llama_dir
    return tiny_llama_dir()


@pytest.fixture(scope="module")
def tokenizer(folder):
    return transformers.AutoTokenizer.from_pretrained(folder)


def _model(folder, config=None):
    """The tiny Llama with larger random weights (its initial 0.02 scale greedily repeats one token, which would
    let a wrong cache pass), wrapped by peft when `config` is given."""
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    if config is not None:
        torch.manual_seed(1)
        model = peft.get_peft_model(model, config)
    return model.eval()


CONFIGS = {
    "plain": lambda: None,
    "lora": lambda: peft.LoraConfig(task_type="CAUSAL_LM", r=4, init_lora_weights=False),
    "prompt_tuning": lambda: peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5),
    "prefix_tuning": lambda: peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5),
    "p_tuning": lambda: peft.PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=5, encoder_hidden_size=16),
}


def _generated(model, ids: list[int], n: int) -> list[int]:
    x = torch.tensor([ids])
    with torch.inference_mode():
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False,
                             eos_token_id=None)
    return out[0, len(ids):].tolist()


@pytest.fixture(scope="module")
def plain_tokens(folder, tokenizer):
    return _generated(_model(folder), gen.prompt_of_length(tokenizer, TEXT, PROMPT_LEN), NEW)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_manual_loop_yields_generates_tokens(name, folder, tokenizer, plain_tokens):
    model = _model(folder, CONFIGS[name]())
    ids = gen.prompt_of_length(tokenizer, TEXT, PROMPT_LEN)
    expected = _generated(model, ids, NEW)
    assert len(set(expected)) > 3  # varied output: a wrong cache or a re-injected prompt would show
    assert gen.greedy_tokens(model, ids, NEW, DEVICE) == expected
    if name != "plain":
        assert expected != plain_tokens  # the adapter is in the path
    got = gen.generation_latency(model, ids, new_tokens=3, samples=2, device=DEVICE, warmup=1)
    assert got["latency_method"] == "manual-cache"


def test_percentiles_ordered_and_positive(folder, tokenizer):
    ids = gen.prompt_of_length(tokenizer, TEXT, PROMPT_LEN)
    got = gen.generation_latency(_model(folder), ids, new_tokens=6, samples=5, device=DEVICE)
    assert set(got) >= {"ttft_ms_p50", "ttft_ms_p95", "tpot_ms_p50", "tpot_ms_p95", "latency_method"}
    assert 0 < got["ttft_ms_p50"] <= got["ttft_ms_p95"]
    assert 0 < got["tpot_ms_p50"] <= got["tpot_ms_p95"]
    assert got["prompt_tokens"] == PROMPT_LEN and got["new_tokens"] == 6
    one = gen.generation_latency(_model(folder), ids, new_tokens=1, samples=2, device=DEVICE, warmup=1)
    assert one["tpot_ms_p50"] is None and one["ttft_ms_p50"] > 0


def test_more_new_tokens_leave_ttft_alone(folder, tokenizer):
    model, ids = _model(folder), gen.prompt_of_length(tokenizer, TEXT, 32)
    short = gen.generation_latency(model, ids, new_tokens=2, samples=7, device=DEVICE)["ttft_ms_p50"]
    long = gen.generation_latency(model, ids, new_tokens=24, samples=7, device=DEVICE)["ttft_ms_p50"]
    assert 0.1 < long / short < 10


def test_generate_fallback(folder, tokenizer):
    model = _model(folder, CONFIGS["prompt_tuning"]())
    ids = gen.prompt_of_length(tokenizer, TEXT, PROMPT_LEN)
    got = gen.generation_latency(model, ids, new_tokens=4, samples=3, device=DEVICE, warmup=1, method="generate")
    assert got["latency_method"] == "generate"
    assert 0 < got["ttft_ms_p50"] <= got["ttft_ms_p95"] and got["tpot_ms_p50"] <= got["tpot_ms_p95"]
    # A prompt-learning type without a manual loop (CPT, multitask prompt tuning) falls back on its own.
    other = SimpleNamespace(active_peft_config=SimpleNamespace(peft_type="CPT", is_prompt_learning=True))
    assert gen._latency_path(other)[0] == "generate"
    with pytest.raises(ValueError):
        gen.generation_latency(other, ids, new_tokens=2, samples=1, device=DEVICE, method="manual-cache")


def test_counting_stops_at_eos_and_pad():
    new = torch.tensor([[5, 6, 2, 3, 3], [5, 6, 7, 8, 9], [3, 3, 3, 3, 3]])
    assert gen.count_generated(new, {2, 3}) == 2 + 5 + 0
    assert gen.count_generated(new[:, :0], {2}) == 0


def test_throughput_counts_tokens_before_eos(folder, tokenizer):
    model = _model(folder)
    tokenizer.padding_side = "left"
    batch = dict(tokenizer(["review : great movie sentiment :", "sentence : the film was bad and long ;"],
                           return_tensors="pt", padding=True))
    width, n, pad = batch["input_ids"].shape[1], 8, tokenizer.pad_token_id
    with torch.inference_mode():
        rows = model.generate(**batch, max_new_tokens=n, do_sample=False, eos_token_id=None,
                              pad_token_id=pad)[:, width:].tolist()
    # A fake EOS: a token row 0 emits at step 2 (and not before), so row 0 stops early.
    fake = rows[0][2] if rows[0][2] not in rows[0][:2] else rows[0][1]
    model.generation_config.eos_token_id = fake
    expected = sum(next((i for i, t in enumerate(r) if t in (fake, pad)), n) for r in rows)
    assert expected < 2 * n
    got = gen.generation_throughput(model, [batch], max_new_tokens=n, pad_token_id=pad, device=DEVICE)
    assert got["generated_tokens"] == expected
    assert got["generated_tokens_per_s"] == pytest.approx(expected / got["generation_s"])


def test_overhead_pct():
    assert gen.overhead_pct(12.0, 10.0) == pytest.approx(20.0)
    assert gen.overhead_pct(9.0, 10.0) == pytest.approx(-10.0)
    assert gen.overhead_pct(10.0, 10.0) == 0.0
    with pytest.raises(ValueError):
        gen.overhead_pct(1.0, 0.0)


def test_prompt_of_length(tokenizer):
    body = tokenizer("great movie", add_special_tokens=False)["input_ids"]
    for length in (1, 3, 5, 50):
        ids = gen.prompt_of_length(tokenizer, "great movie", length)
        assert len(ids) == length
        assert ids[-1] in body
    assert gen.prompt_of_length(tokenizer, "great movie", 5) == (body * 3)[:5]  # the tiny tokenizer adds no BOS
    with pytest.raises(ValueError):
        gen.prompt_of_length(tokenizer, "great movie", 0)


def test_prompt_of_length_keeps_a_leading_bos():
    def tokenizer(text, add_special_tokens=True):
        ids = [10 + i for i, _ in enumerate(text.split())]
        return {"input_ids": ([1] if add_special_tokens else []) + ids}
    assert gen.prompt_of_length(tokenizer, "a b c", 6) == [1, 10, 11, 12, 10, 11]
    assert gen.prompt_of_length(tokenizer, "a b c", 1) == [1]
