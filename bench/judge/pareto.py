"""Pareto optimality: which methods no other method beats on every axis at once.

A dozen points per plot make the plain O(n^2) dominance check the clearest choice; it needs no library.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def pareto_mask(values: Sequence[Sequence[float]], higher_is_better: Sequence[bool]) -> list[bool]:
    """For each row of `values` (one point, one column per objective): is it Pareto-optimal?

    A point is dominated when another is at least as good on every objective and strictly better on one.
    Equal points do not dominate each other, so ties are all optimal. Rows holding NaN are never optimal
    and never dominate (a failed or unmeasured run is not a trade-off).
    """
    points = np.asarray(values, dtype=float).reshape(len(values), len(higher_is_better))
    if len(points) == 0:
        return []
    sign = np.where(np.asarray(higher_is_better, dtype=bool), 1.0, -1.0)
    scores = points * sign  # now higher is better on every column
    valid = ~np.isnan(scores).any(axis=1)
    optimal = []
    for i in range(len(scores)):
        if not valid[i]:
            optimal.append(False)
            continue
        others = scores[valid]
        dominated = ((others >= scores[i]).all(axis=1) & (others > scores[i]).any(axis=1)).any()
        optimal.append(not bool(dominated))
    return optimal


def frontier(xs: Sequence[float], ys: Sequence[float], x_higher_is_better: bool,
             y_higher_is_better: bool = True) -> list[int]:
    """Indices of the Pareto-optimal points of a 2-D plot, ordered by x (to draw the frontier line)."""
    mask = pareto_mask(list(zip(xs, ys)), [x_higher_is_better, y_higher_is_better])
    return sorted((i for i, ok in enumerate(mask) if ok), key=lambda i: (xs[i], ys[i]))
