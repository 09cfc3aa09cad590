"""`bench report`: one self-contained HTML page (plus the same tables in Markdown) from result folders.

jinja2 renders the page (autoescaped: error messages and paths land in it verbatim); matplotlib draws the
plots as SVG, embedded as data: URIs so each figure keeps its own element ids and nothing is fetched.
"""
from __future__ import annotations

import base64
import datetime as dt
import os
from pathlib import Path

import jinja2

from bench.core.errors import UsageError
from bench.core.files import write_text
from bench.results.store import RESULTS_FILE, ResultStore, in_plan_order, latest_folder, latest_runs
from reports.markdown import markdown_report
from reports.plots import history_plot, method_colors, section_plots
from reports.sections import build_sections, fmt_number

DEFAULT_TITLE = "peft-bench report"


def load_records(paths: list[str | os.PathLike]) -> tuple[list[dict], list[Path]]:
    """Records of every result folder (or results.jsonl file) given, each run once even if listed twice."""
    records, seen, folders = [], set(), []
    for raw in paths:
        path = Path(raw)
        folder = path.parent if path.name == RESULTS_FILE else path
        if not (folder / RESULTS_FILE).is_file():
            raise UsageError(f"no results in {str(raw)!r} (expected a folder holding {RESULTS_FILE}, "
                              f"as written by `bench run --out FOLDER`)")
        folders.append(folder)
        for r in ResultStore(folder).records():
            key = r.get("run_id") or id(r)
            if key not in seen:
                seen.add(key)
                records.append(r)
    return in_plan_order(latest_runs(records, per=("invocation",))), folders  # never in the order they ran


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("reports", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.globals["fmt_number"] = fmt_number
    return env


def _data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def _trend(history_db: Path, section):
    """This section's configuration (same suite, task, budget, model, device) in the history database."""
    from bench.judge import trends
    trend = trends.trends(history_db, suite=section.suite, task=section.task, metric=section.metric)
    same = (trend.budget == section.budget) & (trend.model == section.model) & (trend.device == section.device)
    return trend[same]


def render_html(records: list[dict], sources: list[Path], title: str = DEFAULT_TITLE,
                history_db: Path | None = None) -> str:
    """The page; with a history database, each section also plots its headline metric over past invocations."""
    sections = build_sections(records)
    # keyed by row label: a method run under two configurations has a row, and a colour, for each
    colors = method_colors(list(dict.fromkeys(row.method for s in sections for row in s.rows)))
    for s in sections:
        plots = section_plots(s, colors)
        if history_db is not None and Path(history_db).is_file() and s.metric:
            svg = history_plot(s, _trend(history_db, s), colors)
            if svg:
                plots.append(("history", f"{s.metric} over past invocations", svg))
        s.plots = [(kind, caption, _data_uri(svg)) for kind, caption, svg in plots]
    totals: dict[str, int] = {}
    for r in records:
        totals[r.get("status") or "unknown"] = totals.get(r.get("status") or "unknown", 0) + 1
    return _environment().get_template("report.html.j2").render(
        title=title, sections=sections, sources=[str(s) for s in sources], totals=totals, total_runs=len(records),
        generated=dt.datetime.now().astimezone().isoformat(timespec="seconds"))


def write_report(records: list[dict], html_path: Path, sources: list[Path],
                 title: str = DEFAULT_TITLE, history_db: Path | None = None) -> dict[str, Path]:
    """Write `<name>.html` and `<name>.md` side by side; returns their paths."""
    html_path = Path(html_path)
    write_text(html_path, render_html(records, sources, title, history_db))
    md_path = html_path.with_suffix(".md")
    write_text(md_path, markdown_report(build_sections(records), title))
    return {"html": html_path, "markdown": md_path}


def latest_results(root: Path) -> Path:
    """The newest result folder under `root` (what `bench run` writes by default), for a bare `bench report`."""
    folder = latest_folder(root)
    if folder is None:
        raise UsageError(f"no result folders under {str(root)!r} (pass one or more: bench report RESULTS... )")
    return folder
