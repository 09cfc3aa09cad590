"""The harness's own overhead: the shared training loop against a bare loop, the per-run start-up cost, and
the harness against HF Trainer. Ratios are measured side by side in one process; absolute times go into the
benchmark JSON (`make bench`), which the nightly job compares with the previous night's."""
import copy
import json
import os
import statistics
import subprocess
import sys
import time

import pytest
import torch

from benchmarks.conftest import REPO, local_dir

LOOP_STEPS, LOOP_ROUNDS = 200, 5  # long enough that the per-run FLOP count of step 1 (~20 ms) is not the figure
MAX_LOOP_OVERHEAD = 1.05  # the nightly gate; about 1.00 on a quiet machine
MIN_START_UP_GAIN = 4  # spawn's start-up ÷ the fork server's per run: ~70 on a quiet machine
MIN_TRAINER_RATIO = 0.5  # harness ÷ HF Trainer examples/s: 1.01-1.13 on a quiet machine (3,000 sentences)
MIN_TRAINER_RATIO_QUICK = 0.25  # under 1,000 sentences the harness's fixed per-run costs weigh (0.63 at 160, busy)


def tiny_model_and_batches():
    """A small random BERT classifier (a few ms per step) and identical, fixed batches for both loops."""
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    config = BertConfig(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=64, num_labels=2)
    model = BertForSequenceClassification(config)
    g = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(5, 512, (16, 48), generator=g),
                "attention_mask": torch.ones(16, 48, dtype=torch.long),
                "labels": torch.randint(0, 2, (16,), generator=g)} for _ in range(LOOP_STEPS)]
    return model, batches


def bare_loop(model, batches, lr: float) -> None:
    """What a user would write: the same optimizer settings as bench/execute/train.py (fused AdamW, weight decay 0.01
    except biases and norms, 6% linear warm-up then decay, clipping at 1.0), reading the loss each step."""
    from transformers import get_linear_schedule_with_warmup

    from bench.execute.train import parameter_groups
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameter_groups(model), lr=lr, fused=True)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.06 * len(batches)), len(batches))
    model.train()
    for batch in batches:
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        loss.item()


def harness_loop(model, batches, lr: float) -> None:
    from bench.execute.train import train
    from methods import METHODS, build
    from suites.smoke import SENTIMENT
    train(model, iter(batches), task=SENTIMENT, method=build(METHODS["full"]), total_steps=len(batches), lr=lr,
          device=torch.device("cpu"), untimed_steps=3, log_every=10)


def test_training_loop_overhead(benchmark):
    """bench/execute/train.py train() vs a bare loop on the same model and batches; each round times the bare loop (in
    the untimed setup) right before the harness, both on a fresh copy of the same initial weights."""
    model, batches = tiny_model_and_batches()
    bare_times = []

    def setup():
        fresh = copy.deepcopy(model)
        t0 = time.perf_counter()
        bare_loop(fresh, batches, 1e-3)
        bare_times.append(time.perf_counter() - t0)
        return (copy.deepcopy(model), batches, 1e-3), {}

    benchmark.pedantic(harness_loop, setup=setup, rounds=LOOP_ROUNDS, warmup_rounds=1)
    harness = benchmark.stats.stats.median
    ratio = harness / statistics.median(bare_times[-LOOP_ROUNDS:])
    benchmark.extra_info.update(bare_median_s=statistics.median(bare_times[-LOOP_ROUNDS:]), loop_ratio=ratio)
    print(f"\ntraining loop: harness / bare loop = {ratio:.3f} (median of {LOOP_ROUNDS} rounds of {LOOP_STEPS} "
          f"steps; harness {harness * 1000 / LOOP_STEPS:.1f} ms per step)")
    assert ratio <= MAX_LOOP_OVERHEAD, f"the training loop costs {ratio:.3f}x a bare loop (limit {MAX_LOOP_OVERHEAD})"


def smoke_grid(tmp_path, start: str, seeds: str) -> list[float]:
    out = tmp_path / start
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--suite", "smoke", "--tasks", "sentiment",
                           "--methods", "head", "--seeds", seeds, "--out", str(out), "--no-report"], cwd=REPO,
                          env={**os.environ, "BENCH_WORKER_START": start}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return [r["metrics"]["worker_start_s"] for r in records]


def test_run_start_up_seconds(benchmark, tmp_path):
    """Runner start of a run -> worker ready to work (process start and imports), per start method. The fork
    server's first run also waits for the server to finish its imports; the runs after it show the per-run cost."""
    cold = smoke_grid(tmp_path, "spawn", "0")
    forked = benchmark.pedantic(smoke_grid, args=(tmp_path, "forkserver", "0,1,2,3"), rounds=1, iterations=1)
    per_run = statistics.median(forked[1:])
    benchmark.extra_info.update(spawn_start_s=cold[0], forkserver_first_start_s=forked[0],
                                forkserver_start_s=per_run)
    print(f"\nrun start-up: spawn {cold[0]:.2f} s; forkserver {per_run:.3f} s per run "
          f"(first run {forked[0]:.2f} s, waiting for the server's imports)")
    # A forked run imports nothing a cold one must (torch, transformers, peft: seconds): measured side by side,
    # ~70x less on a quiet machine; a fork server that stopped preloading would start runs as slowly as spawn.
    assert per_run < cold[0] / MIN_START_UP_GAIN, (per_run, cold[0])


TRAINER_EXAMPLES = int(os.environ.get("BENCH_TRAINER_EXAMPLES", "3000"))  # smaller for a quick check


def sst2_setup(method_name: str):
    """The SST-2 task, its first TRAINER_EXAMPLES training sentences encoded (max length 64) and a fresh MiniLM
    with the method applied, as a run would build them."""
    from methods import METHODS, build
    from methods.base import RunContext, head_names
    from suites import get_task
    from suites.base import Budget
    task = get_task("nlp", "sst2")
    budget = Budget(train_examples=TRAINER_EXAMPLES, batch_size=16, max_length=64, untimed_steps=3)
    data = task.load_data(local_dir("BENCH_DATA_DIR"), budget)
    method = build(METHODS[method_name])
    steps = budget.steps(len(data.train))
    ctx = RunContext(task=task, budget=budget, total_steps=steps, device=torch.device("cpu"), head_names=[])
    loaded = task.load_model(task.resolve_model(task.default_model, local_dir("BENCH_MODEL_DIR")), data.label_names,
                             **method.load_kwargs(ctx))
    model, tokenizer = loaded.model, loaded.processor
    ctx.head_names = head_names(model)
    examples = task.encode(data.train, tokenizer, budget, train=True)
    model = method.apply(model, ctx)
    task.after_method(model)
    return task, budget, method, model, tokenizer, examples, steps


def harness_examples_per_s(method_name: str) -> tuple[float, int, int]:
    """(examples/s, optimizer steps taken, steps the budget plans for these examples)."""
    from bench.execute.train import train
    task, budget, method, model, tokenizer, examples, steps = sst2_setup(method_name)
    t0 = time.perf_counter()
    stats = train(model, task.train_batches(examples, tokenizer, budget, 0), task=task, method=method,
                  total_steps=steps, lr=METHOD_LR[method_name], device=torch.device("cpu"),
                  untimed_steps=budget.untimed_steps, log_every=50)
    return len(examples) / (time.perf_counter() - t0), stats.steps, steps


def trainer_examples_per_s(method_name: str, out) -> tuple[float, int]:
    """HF Trainer with its defaults (fused AdamW in this torch), length-grouped sampling, the same batch size:
    (examples/s, optimizer steps taken)."""
    import datasets
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments
    task, budget, method, model, tokenizer, examples, steps = sst2_setup(method_name)
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=budget.batch_size,
                             num_train_epochs=1, learning_rate=METHOD_LR[method_name],
                             train_sampling_strategy="group_by_length", report_to="none", save_strategy="no",
                             logging_strategy="no", disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(examples),
                      data_collator=DataCollatorWithPadding(tokenizer))
    assert "fused" in str(trainer.args.optim).lower()  # its default in this transformers and torch
    t0 = time.perf_counter()
    trainer.train()
    return len(examples) / (time.perf_counter() - t0), trainer.state.global_step


METHOD_LR = {"full": 5e-5, "lora": 2e-3, "head": 5e-3}


@pytest.mark.parametrize("method_name", ["full", "lora", "head"])
def test_harness_vs_hf_trainer(benchmark, method_name, tmp_path):
    """Train examples/s of the harness ÷ HF Trainer's on the same SST-2 sentences, model and method, run one
    after the other (BENCH_TRAINER_EXAMPLES sentences, default 3,000)."""
    ours, our_steps, planned = benchmark.pedantic(harness_examples_per_s, args=(method_name,), rounds=1,
                                                  iterations=1)
    theirs, their_steps = trainer_examples_per_s(method_name, tmp_path)
    benchmark.extra_info.update(harness_examples_per_s=ours, trainer_examples_per_s=theirs, ratio=ours / theirs,
                                examples=TRAINER_EXAMPLES)
    print(f"\n{method_name}: harness {ours:.1f} ex/s, HF Trainer {theirs:.1f} ex/s, ratio {ours / theirs:.2f} "
          f"({TRAINER_EXAMPLES} SST-2 sentences, batch 16, max length 64)")
    # The same work on both sides: one epoch of the same sentences in batches of 16, every planned step taken.
    assert our_steps == their_steps == planned == -(-TRAINER_EXAMPLES // 16), (our_steps, their_steps, planned)
    limit = MIN_TRAINER_RATIO if TRAINER_EXAMPLES >= 1000 else MIN_TRAINER_RATIO_QUICK
    assert ours / theirs >= limit, f"the harness trains at {ours / theirs:.2f}x HF Trainer's rate (limit {limit})"
