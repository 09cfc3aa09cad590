"""Parse the quantities users type on the command line: sizes (`2GB`), shares (`1%`, `0.2`), bounds.

Memory metrics are recorded in MB of 2**20 bytes (see bench/meters/windows.py), so sizes parse to that unit and
`GB` means 1024 MB: `--max-memory 2GB` and a recorded `peak_train_mb` of 2048 are the same amount.
"""
from __future__ import annotations

import re

from bench.core.errors import UsageError

_SIZE_UNITS_MB = {"": 1.0, "b": 2.0**-20, "kb": 2.0**-10, "kib": 2.0**-10, "k": 2.0**-10, "mb": 1.0,
                  "mib": 1.0, "m": 1.0, "gb": 1024.0, "gib": 1024.0, "g": 1024.0, "tb": 2.0**20, "tib": 2.0**20}
_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)"


def _split(text: str) -> tuple[float, str] | None:
    match = re.fullmatch(_NUMBER + r"\s*([a-z%]*)", text.strip().lower())
    return (float(match.group(1)), match.group(2)) if match else None


def parse_size_mb(text: str) -> float:
    """'2GB' -> 2048.0, '512MB' -> 512.0, '800' -> 800.0 (MB when no unit is given)."""
    parsed = _split(text)
    if parsed is None or parsed[1] not in _SIZE_UNITS_MB or parsed[0] < 0:
        raise UsageError(f"bad size {text!r} (expected a number with a unit: B, KB, MB, GB, TB; e.g. 2GB)")
    return parsed[0] * _SIZE_UNITS_MB[parsed[1]]


def parse_percent(text: str) -> float:
    """'1%' -> 1.0 and '1' -> 1.0: a share in percent, the unit of `trainable_pct`."""
    parsed = _split(text)
    if parsed is None or parsed[1] not in ("", "%") or not 0 <= parsed[0] <= 100:
        raise UsageError(f"bad percentage {text!r} (expected a number from 0 to 100, e.g. 1% or 0.5%)")
    return parsed[0]


def parse_fraction(text: str) -> float:
    """A relative amount: '0.2' -> 0.2 and '20%' -> 0.2."""
    parsed = _split(text)
    if parsed is None or parsed[1] not in ("", "%") or parsed[0] < 0:
        raise UsageError(f"bad threshold {text!r} (expected a non-negative number such as 0.2 or 20%)")
    return parsed[0] / 100 if parsed[1] == "%" else parsed[0]


def parse_number(text: str) -> float:
    """A plain number; '%' means percent of one ('85%' -> 0.85), the way ratio metrics are stored."""
    parsed = _split(text)
    if parsed is None or parsed[1] not in ("", "%"):
        raise UsageError(f"bad number {text!r} (expected e.g. 0.85 or 85%)")
    return parsed[0] / 100 if parsed[1] == "%" else parsed[0]


def name_value(text: str, what: str) -> tuple[str | None, str]:
    """'accuracy=0.8' -> ('accuracy', '0.8'); '0.8' -> (None, '0.8')."""
    name, sep, value = text.partition("=")
    if not sep:
        return None, text
    if not name.strip() or not value.strip():
        raise UsageError(f"bad {what} {text!r} (expected NAME=VALUE)")
    return name.strip(), value.strip()


def format_mb(mb: float) -> str:
    """1.50 GB, 737 MB, 0.294 MB: three significant digits below 100 MB, so a 0.3 MB adapter is not "0 MB"."""
    if mb >= 1024:
        return f"{mb / 1024:.2f} GB"
    return f"{mb:.0f} MB" if mb >= 100 else f"{mb:.3g} MB"
