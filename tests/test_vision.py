"""The vision path: image preprocessing, frozen BatchNorm, peft on TF-padded convs, the int8 conv base, and
every method on the smoke vision task through the real CLI."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smoke_table
from PIL import Image
from transformers import MobileNetV1Config, MobileNetV1ForImageClassification

from bench.execute.train import train
from methods import METHODS as REGISTERED
from methods import SkipRun, get_method
from methods.base import RunContext, head_names
from methods.int8_weights import Int8Conv2d, int8_layers, quantize_frozen_weights, quantize_per_channel
from suites import get_suite, get_task
from suites.base import Budget
from suites.image_classification import ImagePreprocessing, is_batchnorm, random_crop_flip
from suites.smoke_vision import TINY_MOBILENET

METHODS = list(REGISTERED)
TASK = get_task("smoke", "images")
BUDGET = Budget(train_examples=32, batch_size=8, epochs=1, max_length=32, latency_samples=2, untimed_steps=0)


# --- preprocessing -------------------------------------------------------------------------------------

def test_normalisation_maps_pixels_to_minus_one_one_with_the_checkpoint_mean_and_std():
    prep = ImagePreprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    half = np.zeros((32, 32, 3), np.uint8)
    half[:, 16:] = 255  # left half black, right half white
    x = prep.normalise(prep.to_uint8(Image.fromarray(half), 32, center_crop=True)[None])
    assert x.shape == (1, 3, 32, 32) and x.dtype == torch.float32
    assert x[..., :16].eq(-1).all() and x[..., 16:].eq(1).all()
    assert x.mean().item() == pytest.approx(0, abs=1e-6) and x.std(unbiased=False).item() == pytest.approx(1)
    gray = prep.normalise(torch.full((1, 3, 2, 2), 51, dtype=torch.uint8))
    assert torch.allclose(gray, torch.tensor(51 / 127.5 - 1))


def test_preprocessing_matches_the_checkpoint_image_processor(model_dir):
    """Our decode-once pipeline gives what the model's own (transformers) image processor gives."""
    from transformers import AutoImageProcessor
    path = model_dir / TINY_MOBILENET
    prep = ImagePreprocessing.from_pretrained(str(path))
    assert prep.mean == (0.5, 0.5, 0.5) and prep.std == (0.5, 0.5, 0.5)
    assert prep.crop_fraction == pytest.approx(128 / 146)
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (12, 16, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # 96x128, not square
    image = Image.fromarray(smooth)
    ours = prep.normalise(prep.to_uint8(image, 64, center_crop=True)[None])
    theirs = AutoImageProcessor.from_pretrained(path)(
        image, size={"shortest_edge": prep.resized_side(64)}, crop_size={"height": 64, "width": 64},
        return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape == (1, 3, 64, 64)
    assert ours.min() >= -1 and ours.max() <= 1
    assert (ours - theirs).abs().mean() < 0.02  # resampling may round differently at block edges


def test_a_known_cifar_image_is_decoded_and_normalised_exactly(data_dir):
    import datasets
    test = datasets.load_dataset("parquet", data_files={"test": str(data_dir / "cifar10/test.parquet")})["test"]
    raw = np.asarray(test[0]["img"].convert("RGB"), dtype=np.float64)
    assert raw[0, 0].tolist() == [158, 112, 49]  # pinned in ../shared/data/README.md
    prep = ImagePreprocessing()  # mean/std 0.5, no crop: 32 px in, 32 px out, pixels untouched
    x = prep.normalise(prep.to_uint8(test[0]["img"], 32, center_crop=True)[None])[0]
    assert torch.allclose(x[:, 0, 0], torch.tensor([158, 112, 49]) / 127.5 - 1)
    expected = raw / 127.5 - 1
    assert x.mean().item() == pytest.approx(expected.mean(), abs=1e-5)
    assert x.std(unbiased=False).item() == pytest.approx(expected.std(), abs=1e-5)


def test_random_crop_flip_takes_windows_of_the_image():
    pixels = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    out = random_crop_flip(pixels, 4, torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 4, 4)
    for img, crop in zip(pixels, out):
        windows = [img[:, t:t + 4, l:l + 4] for t in range(3) for l in range(3)]
        assert any(torch.equal(crop, w) or torch.equal(crop, w.flip(-1)) for w in windows)


# --- frozen BatchNorm, peft on TF-padded convs, int8 convs (in process, a config-built MobileNet) -------

def tiny_mobilenet() -> MobileNetV1ForImageClassification:
    """Same architecture family as the tiny checkpoint (TF padding, 1x1 convs, BN), random weights."""
    torch.manual_seed(0)
    config = MobileNetV1Config(depth_multiplier=0.25, image_size=32, num_labels=10, tf_padding=True,
                               classifier_dropout_prob=0.0)
    model = MobileNetV1ForImageClassification(config)
    for m in model.modules():  # transformers' init (std 0.02) makes activations and gradients vanish
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # fan_in: right for depthwise too
    return model


def random_examples(n: int, side: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [{"pixel_values": torch.randint(0, 256, (3, side, side), generator=g, dtype=torch.uint8),
             "labels": int(i % 10)} for i in range(n)]


def bn_state(model) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v.clone() for n, m in model.named_modules() if is_batchnorm(m)
            for k, v in m.state_dict().items() if k.startswith(("running_", "num_batches"))}


def apply_method(name: str, model):
    method = get_method(name)
    ctx = RunContext(task=TASK, budget=BUDGET, total_steps=BUDGET.steps(32), device=torch.device("cpu"),
                     head_names=head_names(model))
    model = method.apply(model, ctx)
    TASK.after_method(model)
    return method, model


@pytest.mark.parametrize("name", ["bitfit", "lora"])
def test_batchnorm_statistics_are_unchanged_by_training(name):
    model = tiny_mobilenet()
    before = bn_state(model)
    bn_biases = {n: p.clone() for n, p in model.named_parameters() if "normalization.bias" in n}
    method, model = apply_method(name, model)
    prep = ImagePreprocessing()
    stats = train(model, TASK.train_batches(random_examples(32, 36), prep, BUDGET, seed=0), task=TASK, method=method,
                  total_steps=BUDGET.steps(32), lr=1e-2, device=torch.device("cpu"), untimed_steps=0, log_every=1)
    assert stats.steps == 4
    after = bn_state(model.base_model.model if name == "lora" else model)
    assert before.keys() == after.keys() and len(before) > 10
    for key in before:
        assert torch.equal(before[key], after[key]), key
    if name == "bitfit":  # BitFit trains the BN betas (the convs have no bias) while their statistics stay
        assert any(not torch.equal(p, dict(model.named_parameters())[n]) for n, p in bn_biases.items())


def test_plain_train_mode_would_change_batchnorm_statistics():
    """The check above has teeth: without the task's train_mode, one forward pass moves the statistics."""
    model = tiny_mobilenet()
    before = bn_state(model)
    model.train()
    model(pixel_values=torch.randn(4, 3, 32, 32))
    assert any(not torch.equal(before[k], v) for k, v in bn_state(model).items())


def test_per_channel_int8_round_trip_is_within_half_a_step():
    w = torch.randn(16, 8, 3, 3) * torch.logspace(-3, 1, 16).view(16, 1, 1, 1)  # very different channel scales
    w[3] = 0
    q, scale = quantize_per_channel(w)
    assert q.dtype == torch.int8 and scale.shape == (16, 1, 1, 1)
    assert ((q.float() * scale - w).abs() <= scale / 2 + 1e-12).all()
    assert q[3].eq(0).all()


def test_int8_layers_hold_int8_weights_and_stay_close_to_float():
    model = tiny_mobilenet().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model(pixel_values=x).logits
    n = quantize_frozen_weights(model, keep_float=["classifier"])
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert n == len(convs) == len(int8_layers(model)) and all(isinstance(m, Int8Conv2d) for m in convs)
    params = dict(model.named_parameters())
    assert all(p.dtype == torch.int8 and not p.requires_grad for k, p in params.items() if k.endswith("weight_int8"))
    assert not any(k.endswith("convolution.weight") for k in params)  # the float copies are gone
    assert params["classifier.weight"].dtype == torch.float32
    with torch.no_grad():
        quantised = model(pixel_values=x).logits
    assert (quantised - reference).abs().max() < 0.05 * reference.abs().max()


def pretrained_tiny_mobilenet(model_dir: Path):
    from transformers import AutoModelForImageClassification
    torch.manual_seed(0)  # the new head
    return AutoModelForImageClassification.from_pretrained(model_dir / TINY_MOBILENET, num_labels=10,
                                                           ignore_mismatched_sizes=True)


def adapter_and_head_grads(name: str, model_dir: Path) -> dict[str, torch.Tensor]:
    model = pretrained_tiny_mobilenet(model_dir)
    torch.manual_seed(1)  # the same adapter initialisation for both methods
    method, model = apply_method(name, model)
    TASK.train_mode(model)
    batch = TASK.collate(random_examples(8, 64), ImagePreprocessing())
    method.forward(model, batch).loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n.endswith("weight_int8"))
    return {n.replace("base_model.model.", ""): p.grad for n, p in model.named_parameters() if p.requires_grad}


def cosine(a: dict, b: dict, keys: list[str]) -> float:
    flat = [torch.cat([d[k].flatten() for k in keys]) for d in (a, b)]
    return torch.nn.functional.cosine_similarity(*flat, dim=0).item()


def test_int8_lora_trains_float_adapters_with_the_gradients_of_float_lora(model_dir):
    int8, fp32 = adapter_and_head_grads("int8-lora", model_dir), adapter_and_head_grads("lora", model_dir)
    assert int8.keys() == fp32.keys()
    lora_b = [k for k in int8 if "lora_B" in k]
    head = [k for k in int8 if k.startswith("classifier")]
    assert len(lora_b) > 10 and head
    assert all(int8[k].dtype == torch.float32 and int8[k].abs().sum() > 0 for k in lora_b)  # B first (A*B=0)
    # Measured with real weights on noise images: head 0.99+, adapters 0.90 (rounding noise compounds
    # through 14 ReLU6 layers; per-layer 0.81-0.95). A wrong scale or layout gives ~0.
    assert cosine(int8, fp32, head) > 0.98
    assert cosine(int8, fp32, lora_b) > 0.8


def test_smoke_vision_task_skips_without_local_data_or_models():
    with pytest.raises(SkipRun, match="BENCH_DATA_DIR"):
        TASK.load_data(None, BUDGET)
    with pytest.raises(SkipRun, match="BENCH_MODEL_DIR"):
        TASK.resolve_model(TASK.default_model, None)


def test_vision_suite_resolves_the_local_mobilenet(model_dir):
    assert [t.name for t in get_suite("vision")] == ["cifar10", "imagenette"]
    for task in get_suite("vision"):
        path = Path(task.resolve_model(task.default_model, model_dir))
        assert path == model_dir / "vision/mobilenet_v2_1.0_224-imagenet" and (path / "config.json").is_file()


# --- every method through the real CLI ------------------------------------------------------------------

@pytest.fixture()
def vision_smoke_run(smoke_grid, data_dir, model_dir):  # the shared grid, with local data and models present
    return smoke_grid[0]


def test_every_method_runs_on_the_smoke_vision_task(smoke_grid, data_dir, model_dir):
    wide = smoke_table(smoke_grid, "images").set_index("method")
    assert sorted(wide.index) == sorted(METHODS)
    text_only = {m for m, s in REGISTERED.items() if "cnn" in s.not_on}
    assert set(wide[wide.status == "skipped"].index) == text_only
    wide = wide[wide.status != "skipped"]
    assert (wide.status == "ok").all(), wide[["status", "error"]]
    for col in ["accuracy", "majority_rate", "train_examples_per_s", "latency_p50_ms", "adapter_tensor_mb",
                "peak_train_mb", "trainable_params"]:
        assert wide[col].notna().all(), col
    # Accuracy and the majority rate are shares of the same evaluation images.
    for share in (wide.accuracy, wide.majority_rate):
        correct = share * wide.eval_examples
        assert np.allclose(correct, correct.round())
    assert wide.eval_examples.nunique() == wide.majority_rate.nunique() == 1
    # The share of the timed training time spent on batches (cropping and flipping take time: never 0).
    assert np.allclose(wide.train_data_share, wide.train_data_s / wide.train_wall_s)
    assert (wide.train_data_s > 0).all() and (wide.train_data_s < wide.train_wall_s).all()
    assert "train_tokens_per_s" not in wide or wide.train_tokens_per_s.isna().all()  # images have no tokens
    assert wide.loc["full", "trainable_pct"] == pytest.approx(100)
    trainable = wide.trainable_params
    assert trainable["head"] < trainable["bitfit"] < trainable["lora"] < trainable["full"]
    assert wide.loc["adalora", "adalora_rank_final"] < wide.loc["adalora", "adalora_rank_initial"]
    for m in ["lora", "adalora", "int8-lora"]:
        assert wide.loc[m, "trainable_params"] == wide.loc[m, "peft_trainable_params"]
    # Every frozen conv weight is int8: one byte per weight of the checkpoint's convolutions (the head stays float).
    convs = sum(m.weight.numel() for m in pretrained_tiny_mobilenet(model_dir).modules()
                if isinstance(m, torch.nn.Conv2d))
    for m in ["int8-lora", "int8-ia3"]:
        int8, floating = wide.loc[m, "base_int8_mb"] * 2**20, wide.loc[m, "base_float_mb"] * 2**20
        assert int8 == pytest.approx(convs) and wide.loc[m, "base_int8_share"] == pytest.approx(int8 / (int8 + floating))


def test_int8_lora_records_its_backend(vision_smoke_run):
    records = [json.loads(line) for line in (vision_smoke_run / "results.jsonl").read_text().splitlines()]
    int8 = next(r for r in records if r["method"] == "int8-lora" and r["task"] == "images")
    assert int8["info"]["int8_backend"].startswith("per-channel-int8")
