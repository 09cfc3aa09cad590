"""The harness against TRL's SFTTrainer on a decoder LM: train tokens/s of bench/execute/train.py ÷ SFTTrainer's on
sst2-gen (SmolLM2-135M-Instruct), `full` and `lora`, side by side in one process, as test_overhead.py does against
HF Trainer. Both sides train the same prompt/answer pairs with the loss on the answer only, in batches of the
same size, at the same max length, for the same number of steps, fp32 on the CPU."""
import dataclasses
import functools
import os
import time

import pytest
import torch

from benchmarks.conftest import local_dir

SFT_STEPS = int(os.environ.get("BENCH_SFT_STEPS", "30"))  # optimizer steps per side (batch 8: 8x as many examples)
SFT_QUICK_STEPS = 20  # under this, the bound below is MIN_SFT_RATIO_QUICK
# Harness ÷ SFTTrainer tokens/s. The target is >= 1.0 on a quiet machine; the gate is looser, as the HF Trainer
# anchor's (test_overhead.py MIN_TRAINER_RATIO): the two sides run one after the other, so contention in either
# moves the ratio by more than what it gates. On few steps, each side's fixed per-run costs weigh more (the
# harness's two FLOP-counted steps, Trainer's accelerator and dataloader set-up).
MIN_SFT_RATIO = 0.5
MIN_SFT_RATIO_QUICK = 0.25
BUDGET = "quick"  # sst2-gen's quick budget: batch 8, max length 80


@dataclasses.dataclass
class Setup:
    task: object
    budget: object
    method: object
    ctx: object
    model: object
    tokenizer: object
    rows: list  # (prompt, answer) texts of the examples, in order
    examples: list  # the harness's encoding of the same rows


@functools.cache
def smollm2_path() -> str:
    """The staged SmolLM2 as a float32 checkpoint (converted from its GGUF file into the session's cache on the first
    call, ~40 s: called before anything is timed), or a skip."""
    from suites import get_task
    task = get_task("llm", "sst2-gen")
    model_dir = local_dir("BENCH_MODEL_DIR")
    path = task.resolve_model(task.default_model, model_dir)
    if not os.path.isdir(path):
        pytest.skip(f"SmolLM2-135M-Instruct is not in {model_dir / task.model_local_names[task.default_model]} "
                    f"(the SFTTrainer anchor needs the real model)")
    return path


def sft_setup(method_name: str, apply_method: bool = True) -> Setup:
    """sst2-gen's first training sentences whose prompt + answer + eos fit the quick budget's max length (neither side
    truncates: the harness cuts the prompt's start, SFTTrainer the sequence's end), exactly SFT_STEPS batches of
    them, and a fresh SmolLM2 as a run would load it, with the method applied when `apply_method`."""
    from methods import METHODS, build
    from methods.base import RunContext, head_names
    from suites import get_task
    task = get_task("llm", "sst2-gen")
    quick = task.budget(BUDGET)
    path = smollm2_path()
    wanted = SFT_STEPS * quick.batch_size
    pool = dataclasses.replace(quick, train_examples=2 * wanted)  # a few sentences are too long: room to skip them
    data = task.load_data(local_dir("BENCH_DATA_DIR"), pool)
    method = build(METHODS[method_name])
    budget = dataclasses.replace(quick, train_examples=wanted)
    ctx = RunContext(task=task, budget=budget, total_steps=SFT_STEPS, device=torch.device("cpu"), head_names=[])
    loaded = task.load_model(path, data.label_names, **method.load_kwargs(ctx))
    model, tokenizer = loaded.model, loaded.processor
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ctx.head_names = head_names(model)
    keep, rows = [], []
    for i, row in enumerate(data.train):
        prompt, answer, _ = task.texts(row, data.label_names)
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        if len(task.prompt_ids(tokenizer, prompt)) + len(answer_ids) + 1 <= budget.max_length:
            keep.append(i)
            rows.append((prompt, answer))
        if len(keep) == wanted:
            break
    assert len(keep) == wanted, f"only {len(keep)} of {2 * wanted} sentences fit {budget.max_length} tokens"
    examples = task.encode(data.train.select(keep), tokenizer, budget, train=True)
    assert budget.steps(len(examples)) == SFT_STEPS
    if apply_method:
        model = method.apply(model, ctx)
        task.after_method(model)
    return Setup(task, budget, method, ctx, model, tokenizer, rows, examples)


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def harness_tokens_per_s(method_name: str) -> dict:
    """The shared loop on the task's own batches (length-grouped, right-padded), the method's rate; tokens are the
    batches' real (non-pad) tokens, the wall time the whole train() call."""
    from bench.execute.train import train
    from methods import METHODS
    s = sft_setup(method_name)
    tokens = []

    def counted(batches):
        for batch in batches:
            tokens.append(s.task.real_tokens(batch))
            yield batch
    t0 = time.perf_counter()
    stats = train(s.model, counted(s.task.train_batches(s.examples, s.tokenizer, s.budget, 0)), task=s.task,
                  method=s.method, total_steps=SFT_STEPS, lr=METHODS[method_name].lr, device=torch.device("cpu"),
                  untimed_steps=s.budget.untimed_steps, log_every=s.budget.log_every)
    wall = time.perf_counter() - t0
    return {"tokens_per_s": sum(tokens) / wall, "tokens": sum(tokens), "steps": stats.steps, "wall_s": wall,
            "optimizer": stats.optimizer, "trainable": trainable(s.model),
            "examples": sorted((tuple(e["input_ids"]), tuple(e["labels"])) for e in s.examples)}


def sft_trainer(method_name: str, out):
    """SFTTrainer with TRL's defaults except what must match the harness: a prompt-completion dataset of the same
    texts (completion-only loss, eos appended by TRL), the same batch size, max length, steps (one epoch of the same
    examples) and learning rate, fused AdamW (transformers' default here, asserted), fp32 (TRL's default is bf16),
    no gradient checkpointing (TRL's default recomputes activations; the harness does not), CPU, the length-grouped
    sampler the harness's batching matches (as the HF Trainer anchor), no saving, no reporting, no progress bar.
    LoRA: the harness's own LoraConfig for this model (r=8, alpha 16, dropout 0.05, q_proj/v_proj), handed to
    SFTTrainer as `peft_config`. Returns (trainer, the token counts list its collator fills)."""
    import datasets
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from methods import METHODS
    s = sft_setup(method_name, apply_method=False)
    peft_config = LoraConfig(**s.method.peft_config(s.model, s.ctx)) if s.method.uses_peft else None
    args = SFTConfig(output_dir=str(out), per_device_train_batch_size=s.budget.batch_size, num_train_epochs=1,
                     max_length=s.budget.max_length, learning_rate=METHODS[method_name].lr,
                     completion_only_loss=True, bf16=False, activation_checkpointing=False, use_cpu=True,
                     train_sampling_strategy="group_by_length", save_strategy="no", report_to="none",
                     disable_tqdm=True)
    dataset = datasets.Dataset.from_list([{"prompt": p, "completion": a} for p, a in s.rows])
    trainer = SFTTrainer(model=s.model, args=args, train_dataset=dataset, processing_class=s.tokenizer,
                         peft_config=peft_config)
    assert "fused" in str(trainer.args.optim).lower()  # its default in this transformers and torch
    assert trainer.completion_only_loss and not trainer.args.gradient_checkpointing and not trainer.args.bf16
    assert trainer.args.device.type == "cpu"
    tokens = []
    collate = trainer.data_collator

    def counting(features):
        batch = collate(features)
        tokens.append(int(batch["attention_mask"].sum()))
        return batch
    trainer.data_collator = counting
    return trainer, tokens


def sft_tokens_per_s(method_name: str, out) -> dict:
    trainer, tokens = sft_trainer(method_name, out)
    examples = sorted((tuple(e["input_ids"]), tuple(e["labels"])) for e in trainer.train_dataset)
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    return {"tokens_per_s": sum(tokens) / wall, "tokens": sum(tokens), "steps": trainer.state.global_step,
            "wall_s": wall, "trainable": trainable(trainer.model), "examples": examples}


@pytest.mark.parametrize("method_name", ["full", "lora"])
def test_harness_vs_sft_trainer(benchmark, method_name, tmp_path):
    """Train tokens/s of the harness ÷ TRL SFTTrainer's on the same sst2-gen prompts and answers, model and method, run
    one after the other (BENCH_SFT_STEPS steps of batch 8 each, default 30)."""
    smollm2_path()  # the one-off GGUF conversion stays out of the benchmark's time
    ours = benchmark.pedantic(harness_tokens_per_s, args=(method_name,), rounds=1, iterations=1)
    theirs = sft_tokens_per_s(method_name, tmp_path)
    ratio = ours["tokens_per_s"] / theirs["tokens_per_s"]
    benchmark.extra_info.update(harness_tokens_per_s=ours["tokens_per_s"], sft_tokens_per_s=theirs["tokens_per_s"],
                                ratio=ratio, steps=SFT_STEPS, tokens=ours["tokens"])
    print(f"\n{method_name}: harness {ours['tokens_per_s']:.1f} tok/s, TRL SFTTrainer {theirs['tokens_per_s']:.1f} "
          f"tok/s, ratio {ratio:.2f} ({SFT_STEPS} steps of 8 sst2-gen prompts, max length 80, "
          f"{ours['tokens']} real tokens; SmolLM2-135M)")
    # The same work on both sides: the same token sequences with the loss on the same positions, every step taken,
    # the same parameters training, the harness on fused AdamW as SFTTrainer.
    assert ours["examples"] == theirs["examples"], "the two sides tokenised the prompts/answers differently"
    assert ours["steps"] == theirs["steps"] == SFT_STEPS, (ours["steps"], theirs["steps"])
    assert ours["tokens"] == theirs["tokens"], (ours["tokens"], theirs["tokens"])
    assert ours["trainable"] == theirs["trainable"], (ours["trainable"], theirs["trainable"])
    assert ours["optimizer"] == "adamw-fused"
    limit = MIN_SFT_RATIO if SFT_STEPS >= SFT_QUICK_STEPS else MIN_SFT_RATIO_QUICK
    assert ratio >= limit, f"the harness trains at {ratio:.2f}x SFTTrainer's token rate (limit {limit})"
