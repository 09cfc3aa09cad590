"""A tiny random Llama for the `llm` suite's smoke budget and its tests: a 2-layer `LlamaForCausalLM` with a
word-level tokenizer over the smoke tasks' words, built from a config (nothing is downloaded), saved once to the
cache so every method loads it through `from_pretrained` like a real checkpoint.

Its module names are Llama's (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, RMSNorm), and its
input and output embeddings are tied, as in SmolLM2, so every method meets the architecture of the real model.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.core.cache import built_once
from suites import smoke, smoke_ner
from suites.base import Budget
from suites.causal_lm import CausalLMTask

TINY_LLAMA = "smoke:tiny-llama"
NAME = "tiny-llama-v1"
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
# Prompt and answer words of the generation tasks (suites/tasks/*-gen.yaml), besides the data's own words.
TEMPLATE_WORDS = ["review", "sentiment", "sentence", "entities", "none", "per", "org", "loc", "misc", ":", ";",
                  "positive", "negative", "\n"]


def vocabulary() -> list[str]:
    words = set(smoke.vocabulary() + smoke_ner.vocabulary()) - set(smoke.SPECIALS)
    words = {w for w in words if not w.startswith("##")} | {w.replace("##", "") for w in smoke_ner.PIECES} \
        | set(smoke_ner.PIECES) | set(TEMPLATE_WORDS)
    return SPECIALS + sorted(words)


def tiny_llama_dir() -> Path:
    """Build (once) and return a folder holding the tiny Llama and its tokenizer."""
    def build(folder: Path) -> None:
        import torch
        from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
        vocab = vocabulary()
        tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
        tok.normalizer = normalizers.Lowercase()
        # Words, punctuation and newlines are tokens; spaces separate them and come back on decoding.
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"[ \t]+"), behavior="removed"),
            pre_tokenizers.Split(Regex(r"\n|[^\s\w]|\w+"), behavior="isolated")])
        tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
        PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                pad_token="<pad>").save_pretrained(folder)
        config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                             tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=3)
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(folder)
    return built_once(NAME, build)


@dataclass
class SmokeGenTask(CausalLMTask):
    """A generation task on the smoke suites' generated data, answered by the tiny Llama."""

    made: str = "sentiment"  # which generated data: sentiment sentences or NER sentences

    def resolve_model(self, ref, model_dir):
        return str(tiny_llama_dir()) if ref == TINY_LLAMA else super().resolve_model(ref, model_dir)

    def model_identity(self, ref, model_dir):
        return {"ref": ref, "built": NAME} if ref == TINY_LLAMA else super().model_identity(ref, model_dir)

    def data_identity(self, data_dir, score_on="eval"):
        return {"generated": f"{self.made}: train (seed 1) / test (seed 2) / dev (seed 3)"}

    def raw_splits(self, data_dir, splits=None):
        import datasets
        make = (lambda n, seed: smoke.sentiment_data(n, seed)) if self.made == "sentiment" else \
            (lambda n, seed: smoke_ner.ner_data(n, seed, with_long=False))
        sizes = {"train": (128, 1), "test": (32, 2), "dev": (32, 3)}
        return datasets.DatasetDict({s: make(*sizes[s]) for s in splits or self.splits()})

    def general_texts(self, data_dir) -> list[str]:
        return [" ".join(r) for r in smoke_ner.ner_data(16, seed=4, with_long=False)["tokens"]]


SMOKE_GEN_BUDGET = Budget(batch_size=8, epochs=2, max_length=48, eval_batch_size=16, latency_samples=3,
                          untimed_steps=1, log_every=2)
COMMON = dict(suite="smoke-llm", default_model=TINY_LLAMA, eval_split="test", dev_split="dev",
              budgets={"smoke": SMOKE_GEN_BUDGET, "quick": SMOKE_GEN_BUDGET, "full": SMOKE_GEN_BUDGET},
              lr_overrides={"full": 1e-2}, forgetting={"column": "tokens", "examples": 16})
SENTIMENT_GEN = SmokeGenTask(name="sentiment-gen", metric="accuracy", text_column="sentence",
                             prompt="review: {text}\nsentiment:", answer=" {answer}", max_new_tokens=2,
                             made="sentiment", **COMMON)
NER_GEN = SmokeGenTask(name="ner-gen", metric="span_f1", tokens_column="tokens", tags_column="ner_tags",
                       prompt="sentence: {sentence}\nentities:", answer=" {answer}", max_new_tokens=12, made="ner",
                       **COMMON)
TASKS = [SENTIMENT_GEN, NER_GEN]
