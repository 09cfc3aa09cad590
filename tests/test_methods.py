"""Each method, applied in-process to the tiny BERT: what trains, and counts that agree with peft."""
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from methods import get_method
from methods.base import RunContext, count_params
from suites.smoke import SENTIMENT, tiny_bert_dir


def _apply(name, steps=20, precision="fp32"):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir(), num_labels=2)
    ctx = RunContext(task=SENTIMENT, budget=SENTIMENT.budget("smoke"), total_steps=steps,
                     device=torch.device("cpu"), head_names=["classifier"], precision=precision)
    method = get_method(name)
    return method, method.apply(model, ctx), ctx


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_full_trains_everything():
    _, model, _ = _apply("full")
    assert all(p.requires_grad for p in model.parameters())


def test_head_trains_only_the_classifier():
    _, model, _ = _apply("head")
    assert _trainable(model) == {"classifier.weight", "classifier.bias"}


def test_bitfit_trains_biases_and_head_only():
    _, model, _ = _apply("bitfit")
    names = _trainable(model)
    assert "classifier.weight" in names
    assert all(n.endswith(".bias") or n.startswith("classifier.") for n in names)
    assert any(n.startswith("bert.encoder") for n in names)


@pytest.mark.parametrize("name", ["lora", "adalora"])
def test_peft_methods_count_like_peft(name):
    _, model, _ = _apply(name)
    ours = count_params(model, ["classifier"])
    trainable, total = model.get_nb_trainable_parameters()
    assert (ours["trainable_params"], ours["total_params"]) == (trainable, total)
    assert ours["head_params"] == 32 * 2 + 2  # the classifier copy in modules_to_save
    assert any("lora_" in n for n in _trainable(model))


def test_adalora_without_update_and_allocate_is_caught():
    """The field's silent failure: never calling update_and_allocate leaves ranks unchanged."""
    method, model, ctx = _apply("adalora")
    with pytest.raises(RuntimeError, match="never reallocated"):
        method.finish(model, ctx)


def test_adalora_skips_the_importance_update_of_a_step_the_fp16_grad_scaler_skipped():
    """Overflowed (inf) gradients would stay in AdaLoRA's importance averages for good: the rank pattern of
    the smoke suite's fp16 runs never changed."""
    batch = {"input_ids": torch.tensor([[2, 7, 8, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long),
             "labels": torch.tensor([1])}
    for precision, expected in [("fp16", [5]), ("fp32", [5, 6])]:  # fp32 skips no step and pays no check
        method, model, ctx = _apply("adalora", precision=precision)
        calls = []
        model.base_model.update_and_allocate = calls.append
        method.forward(model, batch).loss.backward()
        method.on_step(model, 5)
        next(p for p in model.parameters() if p.grad is not None).grad[0] = float("inf")
        method.on_step(model, 6)
        assert calls == expected, precision


def test_weight_decay_spares_biases_and_norms_as_hf_trainer_does():
    """BitFit trains biases and LN tuning norms: decaying them (as every parameter once was) handicaps them."""
    from transformers import AutoModelForSequenceClassification

    from bench.execute.train import parameter_groups
    from suites.smoke import tiny_bert_dir
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir(), num_labels=2)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed, spared = ([names[id(p)] for p in g["params"]] for g in parameter_groups(model))
    assert [g["weight_decay"] for g in parameter_groups(model)] == [0.01, 0.0]
    for p in model.parameters():
        p.requires_grad = p is model.classifier.weight
    assert [[q is model.classifier.weight for q in g["params"]] for g in parameter_groups(model)] == [[True]]
    assert spared and all(n.endswith("bias") or "LayerNorm" in n for n in spared)
    assert all(not n.endswith("bias") and "LayerNorm" not in n for n in decayed)
    assert "bert.encoder.layer.0.attention.self.query.weight" in decayed
    assert len(decayed) + len(spared) == len(list(model.parameters()))
