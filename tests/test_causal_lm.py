"""The causal-LM task kind: completion-only loss, answer parsing, scoring, and the llm smoke suite through the CLI."""
from __future__ import annotations

import json

import pytest

from suites.causal_lm import detokenise, entity_pairs, normalise, parse_label, parse_spans, span_scores
from suites.smoke_llm import NER_GEN, SENTIMENT_GEN, tiny_llama_dir
from tests.conftest import run_bench


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoTokenizer
    folder = tiny_llama_dir()
    loaded = SENTIMENT_GEN.load_model(str(folder), ["negative", "positive"])
    return loaded.model, AutoTokenizer.from_pretrained(folder)


def test_the_loss_is_on_the_answer_tokens_only(tiny):
    import torch
    import torch.nn.functional as F
    model, tokenizer = tiny
    ds = SENTIMENT_GEN.raw_splits(None, ["train"])["train"].select(range(4))
    budget = SENTIMENT_GEN.budget("smoke")
    examples = SENTIMENT_GEN.encode(ds, tokenizer, budget, train=True)
    for row, e in zip(ds, examples):
        prompt = tokenizer(f"review: {row['sentence']}\nsentiment:", add_special_tokens=False)["input_ids"]
        answer = tokenizer(" " + ["negative", "positive"][row["label"]], add_special_tokens=False)["input_ids"]
        assert e["input_ids"] == prompt + answer + [tokenizer.eos_token_id]
        assert e["labels"] == [-100] * len(prompt) + answer + [tokenizer.eos_token_id]
    batch = SENTIMENT_GEN.collate(examples, tokenizer)  # right-padded: pads carry label -100 too
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # By hand: each answer token (and the end-of-sequence) predicted from the position before it, nothing else.
    terms = [F.cross_entropy(logits[i, t - 1][None].float(), batch["labels"][i, t][None])
             for i in range(len(examples)) for t in range(1, batch["labels"].shape[1]) if batch["labels"][i, t] != -100]
    assert len(terms) == sum(2 for _ in examples)  # one answer word + eos each
    assert SENTIMENT_GEN.loss(logits, batch["labels"]).item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)


def test_evaluation_pads_on_the_left_and_keeps_the_gold_answers(tiny):
    _, tokenizer = tiny
    ds = NER_GEN.raw_splits(None, ["test"])["test"].select(range(5))
    examples = NER_GEN.encode(ds, tokenizer, NER_GEN.budget("smoke"), train=False)
    (batch,) = NER_GEN.eval_batches(examples, tokenizer, 8)
    assert (batch["attention_mask"][:, -1] == 1).all() and (batch["attention_mask"][:, 0] == 0).any()
    names = NER_GEN.names_of(ds)
    gold = [entity_pairs(r["tokens"], [names[t] for t in r["ner_tags"]]) for r in ds]
    by_order = [gold[i] for i in NER_GEN.eval_order(examples)]
    assert batch.gold == [parse_spans("; ".join(g) or "none", ["PER", "ORG", "LOC", "MISC"])[0] for g in by_order]


@pytest.mark.parametrize("text, expected", [(" positive", 1), ("Negative.", 0), (" POSITIVE!\nmore", 1),
                                            (" neutral", -1), ("", -1), ("positively", -1)])
def test_a_generated_class_word_is_read_after_normalisation(text, expected):
    assert parse_label(text, ["negative", "positive"]) == expected


@pytest.mark.parametrize("text, pairs, valid", [
    (" PER: John Smith; LOC: Paris", ["PER: john smith", "LOC: paris"], True),
    (" none", [], True),
    (" per: john smith; FOO: bar; LOC:", ["PER: john smith"], True),  # partly valid: the good part counts
    (" I think John is a person", [], False),
    (" PER: john; PER: john\nLOC: x", ["PER: john"], True),  # once each, first line only
])
def test_generated_entity_lists_parse_into_pairs(text, pairs, valid):
    assert parse_spans(text, ["PER", "ORG", "LOC", "MISC"]) == (pairs, valid)


def test_span_scores_and_the_task_score_count_invalid_answers():
    gold = [["PER: john"], ["LOC: paris", "ORG: acme"], []]
    pred = [["PER: john"], ["LOC: paris"], ["MISC: x"]]
    assert span_scores(gold, pred) == {"span_f1": pytest.approx(2 * 2 / (3 + 3)), "span_precision": pytest.approx(2 / 3),
                                       "span_recall": pytest.approx(2 / 3)}
    scores = NER_GEN.score({"gold": gold, "pred": [["PER: john"], [], []], "text": ["PER: john", "none", "blah"]})
    assert scores["invalid_rate"] == pytest.approx(1 / 3)
    from bench.judge import stats
    sums = stats.example_stats("span_f1", gold, pred).sum(0)
    assert stats.value("span_f1", sums) == pytest.approx(span_scores(gold, pred)["span_f1"])


def test_detokenise_and_normalise():
    assert detokenise(["EU", "rejects", "German", "call", "(", "to", "boycott", ")", "."]) == \
        "EU rejects German call (to boycott)."
    assert normalise("  Positive!!  \nsecond line") == "positive"


def test_the_llm_smoke_suite_runs_through_the_cli(tmp_path):
    out = tmp_path / "out"
    proc = run_bench("run", "--suite", "smoke-llm", "--methods", "full,prompt-tuning", "--out", str(out),
                     "--no-report", check=True)
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert {(r["task"], r["method"], r["status"]) for r in records} == {
        (t, m, "ok") for t in ("sentiment-gen", "ner-gen") for m in ("full", "prompt-tuning")}, proc.stderr
    for r in records:
        m = r["metrics"]
        assert m["forgetting"] == pytest.approx(m["general_loss_after"] - m["general_loss_before"])
        assert 0 <= m["invalid_rate"] <= 1
    base = {r["metrics"]["general_loss_before"] for r in records}
    assert len(base) == 1  # the untouched base model's loss on the same general text, whatever the method
