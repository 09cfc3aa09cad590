"""The report's figures, drawn with matplotlib and returned as SVG text to inline in the page.

matplotlib's object API (Figure, no pyplot) needs no display and keeps no global figure state. SVG keeps
text as text and stays small (a few kB per plot); no font or script is fetched when the page opens.
"""
from __future__ import annotations

import io
import math

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench.core.metrics import metric_info
from bench.judge.pareto import frontier
from reports.sections import Section, higher_is_better

STYLE = {
    "svg.fonttype": "none",  # text stays text: smaller files, selectable labels
    "svg.hashsalt": "peft-bench",  # stable element ids, so the same data gives the same file
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
PALETTE = matplotlib.colormaps["tab10"].colors
MARKERS = "osD^vPX<>p"  # shape as well as colour, for readers who cannot tell the colours apart
FIGSIZE = (4.6, 3.3)

# Pareto plots: x metric, axis label, log scale. The headline metric is always y.
PARETO_AXES = [
    ("trainable_params", "trainable parameters (log)", True),
    ("peak_train_mb", "peak RSS (MB)", False),
    ("train_examples_per_s", "training throughput (examples/s)", False),
]


def method_colors(methods: list[str]) -> dict[str, tuple]:
    """One colour per method for the whole report, so a method looks the same in every plot."""
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}


def _marker(method: str, colors: dict) -> str:
    return MARKERS[list(colors).index(method) % len(MARKERS)]


def to_svg(fig: Figure) -> str:
    buf = io.StringIO()
    with matplotlib.rc_context(STYLE):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: the SVG sits inside HTML


def _figure(height: float = FIGSIZE[1]) -> tuple[Figure, object]:
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(FIGSIZE[0], height), layout="constrained")
        ax = fig.add_subplot()
    return fig, ax


def _label(metric: str) -> str:
    unit = metric_info(metric).unit
    return metric if unit in ("", "ratio", "count", "1") else f"{metric} ({unit})"


def pareto_plot(section: Section, x_metric: str, x_label: str, log_x: bool, colors: dict) -> str | None:
    """Headline metric against one cost; Pareto-optimal methods ringed and joined. None: nothing to plot."""
    if section.metric is None:
        return None
    y_metric = section.metric
    # The memory plot uses GPU memory when the runs were on a GPU: RSS then misses most of the cost.
    if x_metric == "peak_train_mb" and any(r.stats.get("cuda_max_allocated_mb") and r.stats["cuda_max_allocated_mb"].n
                                         for r in section.rows):
        x_metric, x_label = "cuda_max_allocated_mb", "peak GPU memory allocated (MB)"
    rows = [r for r in section.rows if not math.isnan(r.mean(x_metric)) and not math.isnan(r.mean(y_metric))
            and (not log_x or r.mean(x_metric) > 0)]
    if not rows:
        return None
    xs, ys = [r.mean(x_metric) for r in rows], [r.mean(y_metric) for r in rows]
    y_up = higher_is_better(y_metric) is not False
    optimal = frontier(xs, ys, bool(higher_is_better(x_metric)), y_up)
    with matplotlib.rc_context(STYLE):
        fig, ax = _figure(height=FIGSIZE[1] + 0.5)  # room for the legend below
        if log_x:
            ax.set_xscale("log")
        if len(optimal) > 1:
            ax.plot([xs[i] for i in optimal], [ys[i] for i in optimal], ls="--", color="0.45", lw=1, zorder=1)
        handles = []
        for i, row in enumerate(rows):
            s = row.stats[y_metric]
            handles.append(ax.errorbar(
                xs[i], ys[i], yerr=s.std if s.std > 0 else None, fmt=_marker(row.method, colors), ms=7,
                color=colors[row.method], mec="black" if i in optimal else colors[row.method],
                mew=1.8 if i in optimal else 0.5, capsize=3, zorder=3, label=row.method + (" *" if i in optimal else "")))
            if i in optimal:  # only the frontier is named on the plot; the legend names every point
                ax.annotate(row.method, (xs[i], ys[i]), xytext=(6, 5), textcoords="offset points", fontsize=8)
        handles.append(Line2D([], [], ls="--", color="0.45", label="* Pareto-optimal"))
        ax.set_xlabel(x_label)
        ax.set_ylabel(_label(y_metric))
        ax.set_title(f"{y_metric} vs {x_label.split(' (')[0]}", fontsize=10)
        fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=7, frameon=False)
        ax.margins(x=0.12, y=0.12)
        return to_svg(fig)


def bar_plot(section: Section, metrics: list[tuple[str, str]], title: str, ylabel: str, colors: dict) -> str | None:
    """Grouped bars, one group per method, one bar per metric (e.g. latency p50 and p95); std as error bars."""
    rows = [r for r in section.rows if any(not math.isnan(r.mean(m)) for m, _ in metrics)]
    if not rows:
        return None
    width = 0.8 / len(metrics)
    with matplotlib.rc_context(STYLE):
        fig, ax = _figure()
        for j, (metric, label) in enumerate(metrics):
            for i, row in enumerate(rows):
                s = row.stats.get(metric)
                if s is None or s.n == 0:
                    continue
                ax.bar(i + (j - (len(metrics) - 1) / 2) * width, s.mean, width * 0.95,
                       yerr=s.std if s.std > 0 else None, capsize=2, color=colors[row.method],
                       alpha=1.0 if j == 0 else 0.55, edgecolor="black", linewidth=0.4,
                       label=label if i == 0 else None)
        ax.set_xticks(range(len(rows)), [r.method for r in rows], rotation=30, ha="right")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", visible=False)
        if len(metrics) > 1:
            ax.legend(fontsize=7, frameon=False)
        return to_svg(fig)


def loss_plot(section: Section, colors: dict) -> str | None:
    """The training loss recorded every N steps, one line per run, one colour per method."""
    curves = [(row.method, r["loss_curve"]) for row in section.rows for r in row.ok_runs if r.get("loss_curve")]
    if not curves:
        return None
    with matplotlib.rc_context(STYLE):
        fig, ax = _figure(height=FIGSIZE[1] + 0.5)
        labelled = set()
        for method, curve in curves:
            steps, losses = zip(*curve)
            ax.plot(steps, losses, color=colors[method], lw=1.2, alpha=0.85,
                    label=None if method in labelled else method)
            labelled.add(method)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (nats)")
        ax.set_title("training loss", fontsize=10)
        fig.legend(loc="outside lower center", fontsize=7, frameon=False, ncols=4)
        return to_svg(fig)


def history_plot(section: Section, trend, colors: dict) -> str | None:
    """The headline metric of this section's configuration over past invocations (from the history
    database), one line per method; points `bench compare` would call a regression are ringed in red."""
    if trend is None or trend.empty or trend.invocation.nunique() < 2:
        return None
    order = list(dict.fromkeys(trend.sort_values("date", kind="stable").invocation))
    # Methods seen only in the past get the next colours; the others keep the page's.
    colors = method_colors(list(dict.fromkeys(list(colors) + list(trend.method))))
    with matplotlib.rc_context(STYLE):
        fig, ax = _figure(height=FIGSIZE[1] + 0.5)
        for method, series in trend.groupby("method", sort=False):
            x = [order.index(inv) for inv in series.invocation]
            ax.errorbar(x, series["mean"], yerr=series["std"].fillna(0), color=colors[method], lw=1.2, capsize=2,
                        marker=_marker(method, colors), ms=4, label=method)
            bad = series[series.regressed.astype(bool)]
            ax.scatter([order.index(inv) for inv in bad.invocation], bad["mean"], s=90, facecolors="none",
                       edgecolors="red", linewidths=1.5, zorder=5)
        dates = trend.drop_duplicates("invocation").set_index("invocation").date
        # "MM-DD HH:MM" (UTC, as recorded): nightly points differ by day, repeated runs of one day by time.
        ax.set_xticks(range(len(order)), [f"{str(dates[inv])[5:10]} {str(dates[inv])[11:16]}" for inv in order],
                      rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(_label(section.metric))
        ax.set_title(f"{section.metric} by invocation (red ring: regression)", fontsize=10)
        fig.legend(loc="outside lower center", fontsize=7, frameon=False, ncols=4)
        return to_svg(fig)


def section_plots(section: Section, colors: dict) -> list[tuple[str, str, str]]:
    """(kind, caption, svg) for every plot the section has data for, in page order."""
    out = []
    for x_metric, x_label, log_x in PARETO_AXES:
        svg = pareto_plot(section, x_metric, x_label, log_x, colors)
        if svg:
            out.append(("pareto", f"{section.metric} vs {x_label}", svg))
    latency = ([("ttft_ms_p50", "TTFT p50"), ("tpot_ms_p50", "TPOT p50")], "batch-1 generation latency", "ms") \
        if section.causal_lm else ([("latency_p50_ms", "p50"), ("latency_p95_ms", "p95")], "batch-1 latency", "ms")
    for metrics, title, ylabel in (
        ([("train_examples_per_s", "train")], "training throughput", "examples/s"),
        latency,
    ):
        svg = bar_plot(section, metrics, title, ylabel, colors)
        if svg:
            out.append(("bars", title, svg))
    svg = loss_plot(section, colors)
    if svg:
        out.append(("loss", "training loss", svg))
    return out
