"""MFU's FLOP count against a hand computation, the peak cache, the training hook, precision names and RAPL."""
import math
import time
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from bench.core.errors import UsageError
from bench.execute.train import train
from bench.meters import contention as meter
from bench.meters import cpu_matmul, energy, flops
from bench.meters.precision import check

M, K, H, N = 5, 8, 16, 4  # batch, inputs, hidden, outputs: Linear(K, H) -> ReLU -> Linear(H, N)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(K, H), nn.ReLU(), nn.Linear(H, N))


def test_flop_count_of_a_linear_stack_matches_the_hand_computation():
    forward = 2 * M * K * H + 2 * M * H * N  # 2·m·n·k per matmul (bias adds and ReLU are not counted)
    model = _mlp()
    x = torch.randn(M, K, requires_grad=True)
    with flops.counter() as c:
        model(x).sum().backward()
    # Backward: a weight-gradient and an input-gradient matmul per layer, each as large as the forward one.
    assert c.get_total_flops() == 3 * forward == 5760
    x = torch.randn(M, K)  # data needs no gradient: the first layer skips its input-gradient matmul
    with flops.counter() as c:
        model(x).sum().backward()
    assert c.get_total_flops() == forward + 2 * M * K * H + 2 * 2 * M * H * N == 4480


def test_flop_count_of_a_depthwise_convolution_matches_the_hand_computation():
    # MobileNet's depthwise 3x3 (groups = channels): each output value is k*k multiply-adds over its own channel.
    batch, channels, size, k = 2, 8, 6, 3
    conv = nn.Conv2d(channels, channels, k, padding=1, groups=channels, bias=False)
    x = torch.randn(batch, channels, size, size, requires_grad=True)
    forward = 2 * batch * channels * size * size * k * k
    with flops.counter() as c:
        conv(x).sum().backward()
    # Backward: the input gradient and the weight gradient, each as large as the forward convolution (torch's
    # own formula counts the weight gradient `groups` times over).
    assert c.get_total_flops() == 3 * forward == 31104


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _mlp()

    def forward(self, x, labels):
        logits = self.net(x)
        return SimpleNamespace(logits=logits, loss=nn.functional.cross_entropy(logits, labels))


def _train(steps=8, **kw):
    task = SimpleNamespace(train_mode=lambda m: m.train(), real_tokens=lambda b: 0,
                           loss=lambda logits, labels: nn.functional.cross_entropy(logits, labels))
    method = SimpleNamespace(forward=lambda m, b: m(**b), on_step=lambda m, s: None, added_positions=0)
    batches = ({"x": torch.randn(M, K), "labels": torch.randint(0, N, (M,))} for _ in range(steps))
    return train(_Model(), batches, task=task, method=method, total_steps=steps, lr=1e-3,
                 device=torch.device("cpu"), untimed_steps=2, log_every=3, **kw)


def test_training_counts_flops_on_untimed_steps_and_times_the_rest_in_windows():
    stats = _train()
    assert stats.flops_per_unit == (2 * K * H + 2 * H * N) + (2 * K * H + 2 * 2 * H * N)  # per example: 896
    assert stats.timed_steps == 6 and stats.timed_examples == 6 * M and stats.timed_units == 6 * M
    assert stats.windows == 3  # steps 3, 4-6, 7-8: closed at the log points 3 and 6 and at the end
    assert [s for s, _ in stats.loss_curve] == [3, 6, 8] and stats.steps == 8
    assert stats.timed_wall_s >= stats.timed_data_s > 0


def test_on_step_end_runs_after_every_step_outside_the_windows_and_stops_training():
    seen = []

    def hook(step, model):
        seen.append(step)
        return step == 5

    stats = _train(on_step_end=hook)
    assert seen == [1, 2, 3, 4, 5] and stats.stopped_early and stats.steps == 5 and stats.timed_steps == 3
    assert stats.windows == 3  # one per timed step: the hook's own time is never timed


@pytest.mark.parametrize("precision", ["bf16", "fp16"])  # fp16 through the grad scaler
def test_autocast_trains_on_cpu(precision):
    stats = _train(precision=precision)
    assert stats.steps == 8 and math.isfinite(stats.final_loss) and stats.flops_per_unit == 896


def test_precision_names_are_checked():
    check("bf16", "on")
    with pytest.raises(UsageError, match="valid: fp32, bf16, fp16"):
        check("fp8", "off")
    with pytest.raises(UsageError, match="valid: on, off"):
        check("fp32", "yes")


def test_peak_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    assert flops.measure_gemm_peak(torch.device("cpu"), torch.float32, seconds=0.05) > 0
    calls, load = [], [3.0]
    monkeypatch.setattr(flops, "measure_gemm_peak", lambda device, dtype: calls.append(dtype) or 1e9 * len(calls))
    monkeypatch.setattr(flops.os, "getloadavg", lambda: (load[0], 0.0, 0.0))
    first = flops.device_peak(torch.device("cpu"), "bf16", False)
    again = flops.device_peak(torch.device("cpu"), "bf16", False)
    assert calls == [torch.bfloat16] and first["flops_per_s"] == again["flops_per_s"] == 1e9
    assert "this run" in first["source"] and "cached" in again["source"] and again["dtype"] == "bf16"
    assert (tmp_path / "peak_flops.json").is_file() and "datasheet_flops_per_s" not in first
    load[0] = 1.0  # measured under a load of 3: once quieter, measured again and the higher figure kept
    assert flops.device_peak(torch.device("cpu"), "bf16", False)["flops_per_s"] == 2e9 and len(calls) == 2
    assert flops.device_peak(torch.device("cpu"), "bf16", False)["flops_per_s"] == 2e9 and len(calls) == 2


def test_a_peak_measured_under_contention_is_measured_again_until_a_quiet_one(tmp_path, monkeypatch):
    # The load average lags (runs on a machine gone quiet read a peak measured under load): contention decides.
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(flops.os, "getloadavg", lambda: (2.0, 0.0, 0.0))  # unchanged: the load rule never fires
    rates, contention = iter([1e9, 3e9, 2e9]), iter([0.6, 0.0, 0.0])
    monkeypatch.setattr(flops, "measure_gemm_peak", lambda device, dtype: next(rates))
    monkeypatch.setattr(flops, "measure_with_contention", lambda measure, threads: (measure(), next(contention)))
    cpu = torch.device("cpu")
    busy = flops.device_peak(cpu, "bf16", False)
    assert busy["flops_per_s"] == 1e9 and busy["contention"] == 0.6 and "this run" in busy["source"]
    quiet = flops.device_peak(cpu, "bf16", False)  # contended: measured again, the higher figure kept
    assert quiet["flops_per_s"] == 3e9 and quiet["contention"] == 0.0 and "this run" in quiet["source"]
    again = flops.device_peak(cpu, "bf16", False)  # quiet: reused, nothing measured
    assert again["flops_per_s"] == 3e9 and "cached" in again["source"]


def test_contention_counts_only_other_processes_beyond_the_free_cpus(monkeypatch):
    assert flops.measure_with_contention(lambda: 1, None) == (1, None)  # GPUs: not measured
    result, contention = flops.measure_with_contention(lambda: time.sleep(0.3) or "slept", 1)
    assert result == "slept" and isinstance(contention, float)  # the real /proc/stat was read: a figure, not None
    monkeypatch.setattr(meter.os, "sched_getaffinity", lambda pid: {0, 1})

    def run(others_s, threads, wall_s=0.25):
        """A call of `wall_s` seconds (a fake clock) in which this process used 0.25 CPU s and others `others_s`."""
        busy, own, clock = iter([100.0, 100.0 + 0.25 + others_s]), iter([10.0, 10.25]), iter([50.0, 50.0 + wall_s])
        monkeypatch.setattr(meter, "busy_s", lambda cpus: next(busy))  # the meter flops shares with the runs
        monkeypatch.setattr(meter, "own_cpu_s", lambda: next(own))
        monkeypatch.setattr(meter, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
        return flops.measure_with_contention(lambda: "done", threads)
    # contention = (others' CPUs' worth - CPUs our threads left free) / threads, within [0, 1]
    assert run(0.0, 2) == ("done", 0.0)
    assert run(0.5, 2) == ("done", 1.0)  # others kept 2 CPUs busy: both our threads competed all along
    assert run(0.375, 2)[1] == 0.75  # 1.5 CPUs' worth over our 2 threads
    assert run(0.375, 1)[1] == 0.5  # one thread: one CPU left free takes 1 of the 1.5
    assert run(0.5, 1)[1] == 1.0  # one CPU left free, but the other process wanted both
    assert run(0.2, 1)[1] == 0.0  # under one CPU's worth of others: they ran on the CPU our thread left free
    assert run(0.5, 2, wall_s=0.19) == ("done", None)  # under 0.2 s: too short for /proc/stat's 10 ms ticks
    assert run(0.0, 4)[1] == 0.0  # 4 threads on 2 CPUs need no more than both: alone, nothing was taken


def _zone(root, name, uj, wrap=5_000_000):
    (root / name).mkdir(exist_ok=True)
    (root / name / "energy_uj").write_text(str(uj))
    (root / name / "max_energy_range_uj").write_text(str(wrap))


def test_rapl_energy_sums_package_zones_and_unwraps(tmp_path, monkeypatch):
    monkeypatch.setattr(energy, "POWERCAP", tmp_path)
    _zone(tmp_path, "intel-rapl:0", 4_900_000)
    _zone(tmp_path, "intel-rapl:1", 1_000_000)
    _zone(tmp_path, "intel-rapl:0:0", 0)  # a sub-zone: part of package 0, never added again
    meter = energy.EnergyMeter(torch.device("cpu"))
    assert meter.source.startswith("rapl: intel-rapl:0, intel-rapl:1")
    meter.start()
    _zone(tmp_path, "intel-rapl:0", 100_000)  # wrapped: 4.9 J -> 5.0 J (= 0) -> 0.1 J
    _zone(tmp_path, "intel-rapl:1", 3_000_000)
    _zone(tmp_path, "intel-rapl:0:0", 4_000_000)
    meter.stop()
    assert meter.joules == pytest.approx(0.2 + 2.0)
    meter.start()  # a second window adds to the first
    _zone(tmp_path, "intel-rapl:0", 600_000)
    meter.stop()
    assert meter.joules == pytest.approx(2.7)


def test_energy_unavailable_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(energy, "POWERCAP", tmp_path / "absent")
    meter = energy.EnergyMeter(torch.device("cpu"))
    assert meter.source == f"unavailable: no RAPL package zones under {tmp_path / 'absent'}" and meter.joules is None
    meter.start()
    meter.stop()
    assert meter.joules is None
    (tmp_path / "intel-rapl:0" / "energy_uj").mkdir(parents=True)  # unreadable as a file
    monkeypatch.setattr(energy, "POWERCAP", tmp_path)
    assert energy.EnergyMeter(torch.device("cpu")).source.startswith("unavailable: ") and "not readable" in \
        energy.EnergyMeter(torch.device("cpu")).source


def test_cpu_matmul_names_are_checked_and_the_probe_restores_torchs_setting():
    with pytest.raises(UsageError, match="unknown --cpu-matmul 'mkl' .valid: default, onednn, auto"):
        cpu_matmul.check("mkl")
    before = torch.backends.mkldnn.matmul.fp32_precision
    rates = iter([100.0, 105.0])  # oneDNN 5% faster: not enough for auto
    probe = cpu_matmul.probe(lambda: next(rates))
    assert torch.backends.mkldnn.matmul.fp32_precision == before
    assert probe["default"]["flops_per_s"] == 100.0 and probe["auto"] == "default"
    assert probe["default"]["max_error"] < 1e-3  # an fp32 product; bf16 inputs would be ~0.2 off
    rates = iter([100.0, 200.0])
    assert cpu_matmul.probe(lambda: next(rates))["auto"] == ("onednn" if probe["onednn_is_fp32"] else "default")


def test_cpu_fp32_peak_is_the_faster_fp32_library_and_bf16_onednn_is_refused(monkeypatch):
    def fake_probe(is_fp32):
        return {"default": {"flops_per_s": 2e11, "max_error": 4e-5}, "auto": "onednn" if is_fp32 else "default",
                "onednn": {"flops_per_s": 4.5e11, "max_error": 4e-5 if is_fp32 else 0.2}, "onednn_is_fp32": is_fp32}

    monkeypatch.setattr(cpu_matmul, "probe", lambda measure: fake_probe(True))
    assert flops._best_cpu_fp32(torch.device("cpu"))["flops_per_s"] == 4.5e11
    monkeypatch.setattr(cpu_matmul, "probe", lambda measure: fake_probe(False))  # an AMX CPU: oneDNN is bf16
    assert flops._best_cpu_fp32(torch.device("cpu"))["flops_per_s"] == 2e11
    monkeypatch.setattr(flops, "device_peak", lambda *a: {"gemm": fake_probe(False)})
    with pytest.raises(UsageError, match="onednn computes in bf16 on this CPU"):
        flops.choose_cpu_matmul("onednn", torch.device("cpu"))
    before = torch.backends.mkldnn.matmul.fp32_precision
    try:
        assert flops.choose_cpu_matmul("auto", torch.device("cpu")).startswith("default (chosen")
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = before
    assert flops.choose_cpu_matmul("auto", torch.device("cuda")) is None


def test_a_cached_cpu_fp32_peak_from_before_the_library_probe_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(flops.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    probed = {"flops_per_s": 4.5e11, "gemm": {"auto": "onednn"}}
    monkeypatch.setattr(flops, "_best_cpu_fp32", lambda device: probed)
    cpu = torch.device("cpu")
    first = flops.device_peak(cpu, "fp32", False)
    cache = flops.json.loads(flops.cache_path().read_text())
    (name, entry), = cache.items()
    cache[name] = {k: v for k, v in entry.items() if k != "gemm"} | {"flops_per_s": 9e11}  # an older, higher entry
    flops.cache_path().write_text(flops.json.dumps(cache))
    again = flops.device_peak(cpu, "fp32", False)
    assert first["gemm"] == again["gemm"] == probed["gemm"] and again["flops_per_s"] == 4.5e11
    assert "this run" in again["source"]


def test_the_peak_times_f_linear_and_a_cached_peak_of_torch_mm_is_measured_again(tmp_path, monkeypatch):
    # CPU fp16 torch.mm takes a reference kernel ~50x slower than F.linear, the call a model's layers make:
    # a peak from torch.mm made the smoke suite's fp16 runs read MFU 1.1-1.3.
    calls = []
    monkeypatch.setattr(flops.F, "linear", lambda a, b: calls.append(a.dtype) or a)
    flops.measure_gemm_peak(torch.device("cpu"), torch.float16, seconds=0.01)
    assert calls and set(calls) == {torch.float16}
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(flops.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setattr(flops, "measure_gemm_peak", lambda device, dtype: 5e10)
    monkeypatch.setattr(flops, "measure_with_contention", lambda measure, threads: (measure(), 0.0))
    old = {"flops_per_s": 2.6e9, "contention": 0.0, "measured_at": "2026-11-29T23:12:32", "load_avg_1m": 0.9}
    key = f"{flops.socket.gethostname()}|{flops._device_name(torch.device('cpu'))}|threads={torch.get_num_threads()}"
    flops.cache_path().write_text(flops.json.dumps({f"{key}|fp16": old}))
    peak = flops.device_peak(torch.device("cpu"), "fp16", False)
    assert peak["flops_per_s"] == 5e10 and peak["op"] == "linear" and "this run" in peak["source"]
    assert list(flops.json.loads(flops.cache_path().read_text())) == [f"{key}|fp16"]  # the old entry, replaced


def test_flop_units_count_the_virtual_tokens_a_prompt_method_prepends():
    from bench.execute.train import padded_units
    from methods import get_method
    batch = {"input_ids": torch.zeros(4, 6, dtype=torch.long), "labels": torch.zeros(4)}
    assert padded_units(batch) == 24 and padded_units(batch, 10) == 64
    assert padded_units({"pixel_values": torch.zeros(3, 3, 8, 8), "labels": torch.zeros(3)}) == 3
    # Prompt and P-tuning lengthen every input; prefix tuning adds keys and values only; LoRA nothing.
    assert get_method("prompt-tuning").added_positions == get_method("p-tuning").added_positions == 10
    assert get_method("prefix-tuning").added_positions == get_method("lora").added_positions == 0


def test_per_step_flops_are_split_from_per_unit_flops_by_two_steps_of_different_sizes():
    from bench.execute.train import split_flops
    # BOFT-like: 1,000 FLOPs a step on its weights, whatever the batch, plus 5 per padded token.
    assert split_flops([(10, 1050), (30, 1150)]) == (5, 1000)
    assert split_flops([(10, 50), (10, 50)]) == (5, 0.0)  # same sizes: nothing to separate, all per unit
    assert split_flops([(10, 50), (30, 160)]) == (210 / 40, 0.0)  # grows faster than linear (attention): per unit
    assert split_flops([(10, 50)]) == (5, 0.0) and split_flops([]) == (None, 0.0)
