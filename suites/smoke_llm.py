"""A tiny random Llama for the `llm` suite's smoke budget and its tests: a 2-layer `LlamaForCausalLM` with a
word-level tokenizer over the smoke tasks' words, built from a config (nothing is downloaded), saved once to the
cache so every method loads it through `from_pretrained` like a real checkpoint.

Its module names are Llama's (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, RMSNorm), and its
input and output embeddings are tied, as in SmolLM2, so every method meets the architecture of the real model.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from bench.core.cache import cache_root
from suites import smoke, smoke_ner

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
    folder = cache_root() / NAME
    if (folder / "config.json").is_file():
        return folder
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = vocabulary()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    # Words, punctuation and newlines are tokens; spaces separate them and come back on decoding.
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"[ \t]+"), behavior="removed"),
                                                 pre_tokenizers.Split(Regex(r"\n|[^\s\w]|\w+"), behavior="isolated")])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    torch.manual_seed(0)
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root))
    LlamaForCausalLM(config).save_pretrained(tmp)
    fast.save_pretrained(tmp)
    try:
        tmp.rename(folder)  # atomic: a concurrent builder either wins or finds the folder complete
    except OSError:
        pass
    return folder
