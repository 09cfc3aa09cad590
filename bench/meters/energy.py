"""Energy over the timed training windows, from counters the hardware keeps: NVML's total energy on NVIDIA
GPUs, RAPL (`/sys/class/powercap`) on CPUs. Where neither can be read the meter says why; it never estimates."""
from __future__ import annotations

import re
from pathlib import Path

POWERCAP = Path("/sys/class/powercap")
_PACKAGE = re.compile(r"intel-rapl:\d+$")  # package zones; their sub-zones (core, uncore) are parts of them


def _rapl():
    """(read() -> {zone: (energy µJ, wrap range µJ)}, description), or (None, why not)."""
    zones = sorted(p for p in POWERCAP.glob("intel-rapl:*") if _PACKAGE.fullmatch(p.name)) \
        if POWERCAP.is_dir() else []
    if not zones:
        return None, f"no RAPL package zones under {POWERCAP}"

    def read():
        return {z.name: (int((z / "energy_uj").read_text()), int((z / "max_energy_range_uj").read_text()))
                for z in zones}
    try:
        read()
    except (OSError, ValueError) as e:  # since 2020 energy_uj is usually root-only
        return None, f"{zones[0] / 'energy_uj'} not readable ({type(e).__name__})"
    return read, f"rapl: {', '.join(z.name for z in zones)} (CPU packages: the whole socket, not this process)"


class NvmlUnavailable(Exception):
    """NVML cannot be asked about the device (no pynvml, no driver); the message says why."""


def nvml_handle(device):
    """(pynvml, NVML's handle of the torch device), imported and initialised here only: CPU runs never load it.
    Shared by the energy meter and bench/meters/contention.py (other processes on the GPU)."""
    try:
        import pynvml
    except ImportError:
        raise NvmlUnavailable("pynvml not installed (pip install nvidia-ml-py)") from None
    try:
        import torch
        pynvml.nvmlInit()
        try:  # by UUID: CUDA_VISIBLE_DEVICES renumbers torch's devices, NVML's not
            handle = pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{torch.cuda.get_device_properties(device).uuid}")
        except Exception:
            handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
    except Exception as e:
        raise NvmlUnavailable(f"NVML not usable ({type(e).__name__}: {e})") from None
    return pynvml, handle


def _nvml(device):
    try:
        pynvml, handle = nvml_handle(device)
    except NvmlUnavailable as e:
        return None, str(e)
    import torch
    try:
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception as e:  # pre-Volta GPUs, drivers without the counter
        return None, f"NVML energy counter not readable ({type(e).__name__}: {e})"

    def read():
        return {"gpu": (pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) * 1000, None)}  # mJ -> µJ, no wrap
    return read, f"nvml: {torch.cuda.get_device_name(device)} (the whole GPU)"


class EnergyMeter:
    """Joules between start() and stop(), summed over windows. A counter that wrapped once within a window is
    unwrapped (windows are seconds long; RAPL wraps after minutes)."""

    def __init__(self, device):
        self._read, self.source = _nvml(device) if device.type == "cuda" else _rapl()
        if self._read is None:
            self.source = f"unavailable: {self.source}"
        self.joules = 0.0 if self._read else None
        self._start = None

    def start(self) -> None:
        if self._read and self._start is None:
            self._start = self._read()

    def stop(self) -> None:
        if self._start is None:
            return
        end = self._read()
        for zone, (e1, wrap) in end.items():
            e0 = self._start[zone][0]
            self.joules += ((e1 - e0) if e1 >= e0 or not wrap else (e1 + wrap - e0)) / 1e6
        self._start = None
