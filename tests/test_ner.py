"""NER: the entity metric against hand-computed CoNLL values, word-piece alignment and truncation
accounting, and every method on the smoke NER task through the real CLI."""
from types import SimpleNamespace

import pytest
import torch
from conftest import applies, smoke_table
from transformers import AutoTokenizer

from methods import METHODS as REGISTERED
from suites.smoke_ner import TAGS
from suites.smoke_ner import TASK as SMOKE_NER
from suites.token_classification import IGNORE, encode_words, entity_scores, words_without_piece

METHODS = list(REGISTERED)


def test_entity_scores_follow_conll_rules():
    gold = [["B-PER", "I-PER", "O", "B-LOC"],
            ["O", "B-ORG", "I-ORG", "O", "B-MISC"],
            ["B-LOC", "O", "O", "B-ORG"]]
    pred = [["B-PER", "O", "O", "B-LOC"],  # PER only partly found: wrong; LOC right
            ["O", "I-ORG", "I-ORG", "O", "O"],  # an I- that starts an entity opens it (conlleval): ORG right
            ["B-LOC", "B-PER", "O", "O"]]  # LOC right, a spurious PER, ORG missed
    # gold entities: PER LOC ORG MISC LOC ORG = 6; predicted: PER LOC ORG LOC PER = 5; correct: LOC ORG LOC = 3
    scores = entity_scores(gold, pred)
    assert scores["entity_precision"] == pytest.approx(3 / 5)
    assert scores["entity_recall"] == pytest.approx(3 / 6)
    assert scores["entity_f1"] == pytest.approx(2 * 0.6 * 0.5 / 1.1)  # 6/11
    assert scores["f1_LOC"] == pytest.approx(1.0)
    assert scores["f1_ORG"] == pytest.approx(2 / 3)  # P 1/1, R 1/2: would be 0 if the I- start were dropped
    assert scores["f1_PER"] == 0 and scores["f1_MISC"] == 0


def test_perfect_and_empty_predictions():
    gold = [["B-PER", "I-PER", "O"]]
    assert entity_scores(gold, gold)["entity_f1"] == 1.0
    assert entity_scores(gold, [["O", "O", "O"]])["entity_f1"] == 0.0  # no warning-driven NaN


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(SMOKE_NER.resolve_model(SMOKE_NER.default_model, None))


def test_first_piece_carries_the_label(tokenizer):
    words, tags = ["martinez", "visited", "stockholm", "."], [1, 0, 5, 0]
    ex = encode_words(tokenizer, [words], [tags], max_length=64)[0]
    assert tokenizer.convert_ids_to_tokens(ex["input_ids"]) == \
        ["[CLS]", "martin", "##ez", "visited", "stock", "##holm", ".", "[SEP]"]
    assert ex["labels"] == [IGNORE, 1, IGNORE, 0, 5, IGNORE, 0, IGNORE]
    assert ex["word_index"] == [-1, 0, -1, 1, 2, -1, 3, -1]
    assert ex["word_tags"] == tags
    assert words_without_piece(ex["word_index"], len(words)) == (0, 0)


def test_truncated_and_empty_words_are_counted(tokenizer):
    cut = encode_words(tokenizer, [["martinez", "visited", "stockholm", "."]], [[1, 0, 5, 0]], max_length=5)[0]
    assert tokenizer.convert_ids_to_tokens(cut["input_ids"]) == ["[CLS]", "martin", "##ez", "visited", "[SEP]"]
    assert words_without_piece(cut["word_index"], 4) == (2, 0)
    # A soft hyphen normalises to nothing: the word gets no piece but is still in word_tags.
    blank = encode_words(tokenizer, [["paris", "\u00ad", "."]], [[5, 0, 0]], max_length=64)[0]
    assert words_without_piece(blank["word_index"], 3) == (0, 1)
    assert blank["word_tags"] == [5, 0, 0]


class GoldAtFirstPiece(torch.nn.Module):
    """A stand-in model that predicts each piece's gold label (known from the batch), for evaluate()."""

    def __init__(self, labels_by_ids):
        super().__init__()
        self.labels_by_ids = labels_by_ids

    def forward(self, input_ids, attention_mask):
        labels = torch.tensor([self.labels_by_ids[tuple(r[m.bool()].tolist())] + [0] * int((1 - m).sum())
                               for r, m in zip(input_ids, attention_mask)])
        return SimpleNamespace(logits=torch.nn.functional.one_hot(labels.clamp(min=0), len(TAGS)).float())


def test_truncated_words_still_count_as_gold_in_evaluation(tokenizer):
    """Perfect predictions on what the model sees; the entity cut off by truncation must be a miss."""
    sentences = [["martinez", "visited", "stockholm", "."], ["olga", "smith", "joined", "globex", "."]]
    tags = [[1, 0, 5, 0], [1, 2, 0, 3, 0]]
    examples = encode_words(tokenizer, sentences, tags, max_length=5)  # cuts stockholm and globex off
    model = GoldAtFirstPiece({tuple(e["input_ids"]): e["labels"] for e in examples})
    predictions, extra = SMOKE_NER.predict(model, SMOKE_NER.eval_batches(examples, tokenizer, 2), torch.device("cpu"),
                                           TAGS)
    scores = {**SMOKE_NER.score(predictions), **extra}
    assert scores["truncated_words"] == 2 + 2
    assert scores["empty_words"] == 0
    # gold: PER LOC PER ORG = 4; predicted: both PERs, both right
    assert scores["entity_precision"] == 1.0
    assert scores["entity_recall"] == pytest.approx(2 / 4)


def test_every_method_runs_on_smoke_ner(smoke_grid):
    wide = smoke_table(smoke_grid, "ner")
    assert sorted(wide.method) == sorted(METHODS)
    encoder = [m for m in METHODS if applies(m)]  # zero-shot (decoders) and int4-lora (CUDA) are skipped rows
    assert (wide[~wide.method.isin(encoder)].status == "skipped").all()
    wide = wide[wide.method.isin(encoder)].reset_index(drop=True)
    assert (wide.status == "ok").all(), wide[["method", "status", "error"]]
    # Entity F1 is the harmonic mean of entity precision and recall (0 where both are 0), method by method.
    p, r = wide.entity_precision, wide.entity_recall
    assert wide.entity_f1.tolist() == pytest.approx((2 * p * r / (p + r)).fillna(0).tolist())
    for col in ["entity_precision", "entity_recall", "f1_PER", "f1_LOC", "train_tokens_per_s", "latency_p50_ms"]:
        assert wide[col].notna().all(), col
    # The generated test split holds sentences longer than the tiny model's 64 positions.
    assert (wide.truncated_words > 0).all()
    by = wide.set_index("method")
    assert by.loc["full", "entity_f1"] > 0.5  # the one smoke method that reliably learns in 48 steps
    # head = classifier only; LoRA-style methods keep the classifier trainable too
    assert by.loc["head", "trainable_params"] == by.loc["head", "head_params"]
    for m in ["lora", "adalora", "int8-lora"]:
        assert 0 < by.loc[m, "head_params"] < by.loc[m, "trainable_params"]


def test_an_input_prompt_on_token_classification_is_scored_on_the_inputs_own_positions():
    """Prompt tuning prepends virtual tokens, and peft's token classifier returns their logits first: the loss
    ignores them (labels padded with -100 in front) and predictions drop them."""
    from transformers import AutoModelForTokenClassification

    from methods import get_method
    from methods.base import RunContext
    from suites.base import token_logits
    from suites.smoke import tiny_bert_dir

    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(tiny_bert_dir(), num_labels=len(TAGS))
    ctx = RunContext(task=SMOKE_NER, budget=SMOKE_NER.budget("smoke"), total_steps=4, device=torch.device("cpu"),
                     head_names=["classifier"])
    method = get_method("prompt-tuning")
    model = method.apply(model, ctx)
    labels = torch.tensor([[IGNORE, 1, 2, 0, IGNORE], [IGNORE, 3, 4, IGNORE, IGNORE]])
    batch = {"input_ids": torch.tensor([[2, 7, 8, 9, 3], [2, 10, 11, 3, 0]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]), "labels": labels}
    out = method.forward(model, batch)
    n = method.added_positions
    assert n > 0 and out.logits.shape[:2] == (2, 5 + n)
    assert torch.allclose(out.loss, SMOKE_NER.loss(out.logits, labels))
    assert torch.equal(token_logits(out.logits, batch["input_ids"]), out.logits[:, n:])
    assert token_logits(out.logits[:, n:], labels).shape[1] == 5  # nothing prepended: unchanged
