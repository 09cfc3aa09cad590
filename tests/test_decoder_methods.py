"""Every method on a causal LM (the tiny random Llama of suites/smoke_llm.py, tied embeddings, no biases,
RMSNorm), applied in-process as the worker applies it: what trains, what is skipped and why; the `decoder` family;
zero-shot; a 4-bit base; and peft's own experiment folders as methods."""
import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch

import methods
from bench.core.errors import SkipRun, UsageError
from bench.judge.tuning import learning_rate
from methods import METHODS, build
from methods.base import RunContext, count_params, family, head_names
from methods.peft_method import adapted_layers
from methods.spec import FAMILIES

GEN_TASK = SimpleNamespace(name="gen", peft_task_type="CAUSAL_LM", lr_overrides={}, default_model="tiny-llama")
# What may train under each method: the adapter's own tensors (peft names them), nothing of the base model.
ADAPTER_MARKS = {"lora": "lora_", "dora": "lora_", "rslora": "lora_", "pissa": "lora_", "adalora": "lora_",
                 "int8-lora": "lora_", "int4-lora": "lora_", "loha": "hada_", "lokr": "lokr_", "vera": "vera_lambda",
                 "oft": "oft_", "boft": "boft_", "fourierft": "fourierft_", "ia3": "ia3_", "int8-ia3": "ia3_",
                 "ln-tuning": "ln_tuning_layers", "prompt-tuning": "prompt_encoder", "p-tuning": "prompt_encoder",
                 "prefix-tuning": "prompt_encoder"}
# Skipped on the tiny Llama on this CPU, and a piece of the reason the record gets.
SKIPPED = {"head": "its pretrained LM head", "bitfit": "LlamaForCausalLM has no bias terms",
           "fourierft": "product is 512",  # 1,000 coefficients, and its v_proj (GQA) has 32 x 16 weights
           "int4-lora": "runs on cuda only, not cpu: on CPU bitsandbytes' 4-bit training measured ~20x slower"}


@pytest.fixture(scope="module")
def llama_dir():
    from suites.smoke_llm import tiny_llama_dir
    return tiny_llama_dir()


def _apply(spec, llama_dir, steps=20):
    """The worker's order: load_kwargs, load, head_names, apply."""
    from transformers import AutoModelForCausalLM
    method = build(spec)
    ctx = RunContext(task=GEN_TASK, budget=None, total_steps=steps, device=torch.device("cpu"), head_names=[])
    kwargs = method.load_kwargs(ctx)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(llama_dir, **kwargs)
    ctx.head_names = head_names(model)
    return method, method.apply(model, ctx), ctx


def _batch(vocab_size: int, n: int = 2, length: int = 8) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab_size, (n, length), generator=g)
    labels = ids.clone()
    labels[:, : length // 2] = -100  # the prompt: loss on the answer only, as suites/causal_lm.py encodes it
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def _trainable(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def _adapted(model) -> set[str]:
    return {n.rsplit(".", 1)[-1] for n in adapted_layers(model)}


def test_family_tells_a_causal_lm_from_an_encoder_and_a_cnn(llama_dir):
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, MobileNetV1Config,
                              MobileNetV1ForImageClassification)

    from suites.smoke import tiny_bert_dir
    llama = AutoModelForCausalLM.from_pretrained(llama_dir)
    bert = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir(), num_labels=2)
    cnn = MobileNetV1ForImageClassification(MobileNetV1Config(depth_multiplier=0.25, image_size=32, num_labels=3))
    assert (family(llama), family(bert), family(cnn)) == ("decoder", "transformer", "cnn")
    assert "decoder" in FAMILIES
    # No task head to add to modules_to_save: the LM head is pretrained, here tied to the input embeddings.
    assert head_names(llama) == [] and llama.lm_head.weight is llama.model.embed_tokens.weight
    assert head_names(bert) == ["classifier"]


@pytest.mark.parametrize("name", [n for n in METHODS if n != "int4-lora"])
def test_every_zoo_method_applies_to_the_tiny_llama_or_skips_with_its_reason(name, llama_dir):
    spec = METHODS[name]
    assert "decoder" in spec.targets or "decoder" in spec.not_on or spec.kind != "peft" or \
        spec.peft_type in ("PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING"), name  # every method declares it
    if name in SKIPPED:
        with pytest.raises(SkipRun, match=SKIPPED[name]):
            _apply(spec, llama_dir)
        return
    method, model, ctx = _apply(spec, llama_dir)
    trainable = _trainable(model)
    if name == "zero-shot":
        assert not method.trains and trainable == []
        return
    assert method.trains and trainable
    if name == "full":
        assert len(trainable) == len(list(model.parameters()))
    else:
        assert all(ADAPTER_MARKS[name] in n for n in trainable), (name, trainable)
    if method.uses_peft:  # our count (which the worker records) equals peft's own
        assert count_params(model, ctx.head_names)["trainable_params"] == model.get_nb_trainable_parameters()[0]
    model.train()
    out = method.forward(model, _batch(model.config.vocab_size))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad), name


def test_lora_family_adapts_the_attention_projections_by_their_llama_names(llama_dir):
    for name in ("lora", "dora", "rslora", "pissa", "adalora", "vera", "loha", "lokr", "oft", "boft", "int8-lora"):
        _, model, _ = _apply(METHODS[name], llama_dir)
        assert _adapted(model) == {"q_proj", "v_proj"} and len(adapted_layers(model)) == 4, name
        assert model.peft_config["default"].modules_to_save in (None, [], set()), name  # no head to copy


def test_ia3_scales_keys_values_and_the_mlp_down_projection_as_peft_does_for_llama(llama_dir):
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as DEFAULT
    for name in ("ia3", "int8-ia3"):
        _, model, _ = _apply(METHODS[name], llama_dir)
        config = model.peft_config["default"]
        assert _adapted(model) == {"k_proj", "v_proj", "down_proj"} == set(DEFAULT["llama"]), name
        assert set(config.feedforward_modules) == {"down_proj"}


def test_ln_tuning_trains_the_rmsnorm_weights_only(llama_dir):
    _, model, _ = _apply(METHODS["ln-tuning"], llama_dir)
    # Every RMSNorm (two per layer and the final norm), found by class; peft's own default for Llama too.
    assert _adapted(model) == {"input_layernorm", "post_attention_layernorm", "norm"}
    assert len(adapted_layers(model)) == 5
    trainable = _trainable(model)
    assert len(trainable) == 5 and all("layernorm" in n or ".norm." in n for n in trainable)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 5 * model.config.hidden_size


def test_ln_tuning_keeps_bert_on_its_layernorms():
    from transformers import AutoModelForSequenceClassification

    from methods.base import norm_layers
    from suites.smoke import tiny_bert_dir
    bert = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir(), num_labels=2)
    assert norm_layers(bert) == ["LayerNorm"]  # what the keyword always gave BERT


def test_zero_shot_trains_nothing_saves_nothing_and_skips_a_classifier(llama_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from suites.smoke import tiny_bert_dir
    method, model, ctx = _apply(METHODS["zero-shot"], llama_dir)
    assert method.trains is False and not _trainable(model)
    assert count_params(model, ctx.head_names)["trainable_params"] == 0
    method.save(model, tmp_path / "saved")
    assert (tmp_path / "saved").is_dir() and not any((tmp_path / "saved").iterdir())
    assert all(build(s).trains for n, s in METHODS.items() if n != "zero-shot")
    bert = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir(), num_labels=2)
    bert_ctx = RunContext(task=SimpleNamespace(peft_task_type="SEQ_CLS"), budget=None, total_steps=4,
                          device=torch.device("cpu"), head_names=["classifier"])
    with pytest.raises(SkipRun, match=r"zero-shot does not apply to transformer models.*untrained \(random\)"):
        build(METHODS["zero-shot"]).apply(bert, bert_ctx)


def test_prompt_tuning_labels_are_padded_by_peft_not_twice(llama_dir):
    """peft's causal-LM wrapper prepends ignored labels for the virtual tokens itself."""
    method, model, _ = _apply(METHODS["prompt-tuning"], llama_dir)
    batch = _batch(model.config.vocab_size)
    out = method.forward(model, batch)
    assert out.logits.shape[1] == batch["input_ids"].shape[1] + method.added_positions


def test_int4_lora_is_declared_for_cuda_with_the_measured_reason_and_skips_before_loading(llama_dir):
    spec = METHODS["int4-lora"]
    assert spec.quantize_base == "int4" and spec.devices == ["cuda"] and "20x" in spec.devices_reason
    method = build(spec)
    ctx = RunContext(task=GEN_TASK, budget=None, total_steps=4, device=torch.device("cpu"), head_names=[])
    with pytest.raises(SkipRun) as err:
        method.load_kwargs(ctx)  # no 4-bit load for a run that is skipped
    assert str(err.value) == f"int4-lora runs on cuda only, not cpu: {spec.devices_reason}"


def test_int4_lora_trains_on_cpu_where_allowed(llama_dir):
    """QLoRA on the tiny Llama on CPU (devices lifted): 4-bit NF4 base, float LoRA; the loss falls over a few
    steps. ~1 s a step even at this size: bitsandbytes' slow CPU fallback."""
    pytest.importorskip("bitsandbytes")
    from bitsandbytes.nn import Linear4bit
    method, model, ctx = _apply(dataclasses.replace(METHODS["int4-lora"], devices=None), llama_dir)
    base = model.base_model.model
    assert sum(isinstance(m, Linear4bit) for m in base.modules()) == 14  # 7 linears x 2 layers; lm_head stays float
    assert not isinstance(base.lm_head, Linear4bit) and base.lm_head.weight is base.model.embed_tokens.weight
    assert _adapted(model) == {"q_proj", "v_proj"}
    model.train()
    batch = _batch(model.config.vocab_size, n=8, length=16)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(6):
        loss = method.forward(model, batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.02, losses
    figures = method.finish(model, ctx)
    assert figures["metrics"]["base_int4_layers"] == 14 and figures["metrics"]["base_int4_mb"] > 0
    assert figures["info"]["int4_backend"].startswith("bitsandbytes nf4")


# --- peft's method_comparison experiment folders ----------------------------------------------------------------

def _experiment(root, name, adapter=None, training=None):
    folder = root / name
    folder.mkdir()
    if adapter is not None:
        (folder / "adapter_config.json").write_text(json.dumps(adapter))
    if training is not None:
        (folder / "training_params.json").write_text(json.dumps(training))
    return folder


TRAINING = {"model_id": "meta-llama/Llama-3.2-3B", "dtype": "bfloat16", "batch_size": 4, "max_steps": 5000,
            "optimizer_kwargs": {"lr": 3e-4, "weight_decay": 0.1}, "lr_scheduler": "cosine"}


def test_a_lora_experiment_folder_is_a_method_with_its_rate_and_what_it_ignored(tmp_path, llama_dir):
    folder = _experiment(tmp_path, "llama-3.2-3B-rank4", adapter={
        "peft_type": "LORA", "r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": None,
        "base_model_name_or_path": "meta-llama/Llama-3.2-3B", "task_type": "CAUSAL_LM", "inference_mode": False,
        "alpha_pattern": {}, "rank_pattern": {}, "modules_to_save": None}, training=TRAINING)
    [spec] = methods.resolve([f"{folder}/"])
    assert (spec.name, spec.kind, spec.peft_type, spec.lr, spec.lr_from) == \
        ("llama-3.2-3B-rank4", "peft", "LORA", 3e-4, "experiment")
    assert spec.config == {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "alpha_pattern": {}, "rank_pattern": {}}
    assert spec.info == {"experiment": {
        "folder": f"{folder}/".rstrip("/"), "base_model": "meta-llama/Llama-3.2-3B",
        "ignored_training_params": ["model_id", "dtype", "batch_size", "max_steps", "lr_scheduler",
                                    "optimizer_kwargs.weight_decay"]}}
    assert learning_rate(GEN_TASK, spec, "smoke", {}) == (3e-4, "experiment")
    assert learning_rate(GEN_TASK, METHODS["lora"], "smoke", {}) == (2e-3, "default")
    assert "lr_from" not in spec.declared() and "info" not in spec.declared()
    # No target_modules: peft's default for the model type (Llama: q_proj, v_proj), as peft's own runs do.
    method, model, ctx = _apply(spec, llama_dir)
    assert _adapted(model) == {"q_proj", "v_proj"}
    record = method.finish(model, ctx)
    assert record["info"]["experiment"] == spec.info["experiment"] and record["info"]["peft_config"]["r"] == 4


def test_a_prompt_tuning_experiment_for_another_model_has_its_model_fields_reset(tmp_path, llama_dir):
    folder = _experiment(tmp_path, "prompt-3B", adapter={
        "peft_type": "PROMPT_TUNING", "num_virtual_tokens": 4, "token_dim": 2048, "num_layers": 24,
        "num_attention_heads": 32, "num_transformer_submodules": 1, "prompt_tuning_init": "RANDOM",
        "task_type": "CAUSAL_LM", "base_model_name_or_path": None}, training={"optimizer_kwargs": {"lr": 3e-4},
                                                                         "max_steps": 5000})
    spec = methods.get_spec(str(folder))
    assert spec.config == {"num_virtual_tokens": 4, "prompt_tuning_init": "RANDOM"}
    assert spec.info["experiment"]["reset"] == ["num_attention_heads", "num_layers", "num_transformer_submodules",
                                                "token_dim"]
    assert spec.info["experiment"]["ignored_training_params"] == ["max_steps"]
    method, model, ctx = _apply(spec, llama_dir)
    config = model.peft_config["default"]
    assert (config.token_dim, config.num_layers) == (model.config.hidden_size, model.config.num_hidden_layers)
    out = method.forward(model, _batch(model.config.vocab_size))
    out.loss.backward()
    assert method.finish(model, ctx)["info"]["experiment"]["reset"] == spec.info["experiment"]["reset"]


def test_an_adalora_experiment_takes_its_schedule_from_the_budget(tmp_path, llama_dir):
    folder = _experiment(tmp_path, "adalora-rank8", adapter={
        "peft_type": "ADALORA", "init_r": 8, "target_r": 4, "lora_alpha": 8, "total_step": 5000, "tinit": 200,
        "tfinal": 500, "deltaT": 1, "target_modules": None, "task_type": None})
    spec = methods.get_spec(str(folder))
    assert spec.info["experiment"]["reset"] == ["deltaT", "tfinal", "tinit", "total_step"]
    assert spec.lr_from == "" and spec.lr == METHODS["adalora"].lr  # no training_params.json: the zoo's rate
    assert spec.info["experiment"]["lr_from_zoo"] == "adalora"
    assert learning_rate(GEN_TASK, spec, "smoke", {})[1] == "default"
    _, model, _ = _apply(spec, llama_dir, steps=20)
    assert model.peft_config["default"].total_step == 20


def test_a_full_fine_tuning_experiment_and_a_folder_that_is_none(tmp_path, llama_dir):
    folder = _experiment(tmp_path, "full-lr1e-5", training={"optimizer_kwargs": {"lr": 1e-5}})
    spec = methods.get_spec(str(folder))
    assert (spec.name, spec.kind, spec.lr, spec.lr_from) == ("full-lr1e-5", "full", 1e-5, "experiment")
    method, model, ctx = _apply(spec, llama_dir)
    assert all(p.requires_grad for p in model.parameters())
    assert method.finish(model, ctx)["info"] == {"experiment": {"folder": str(folder)}}
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="not a peft experiment folder"):
        methods.get_spec(str(empty))
    (folder / "training_params.json").write_text('{"optimizer_kwargs": {"lr": "fast"}}')
    with pytest.raises(UsageError, match="is not a number"):
        methods.get_spec(str(folder))
