"""The report's tables as Markdown (GitHub flavour), for a CI job summary or a pull-request comment."""
from __future__ import annotations

from reports.sections import CONTENDED_MARK, Section, fmt_stat


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def section_table(section: Section) -> str:
    extra = (["95% CI", "vs best"] if section.ties else []) + (["vs zero-shot"] if section.baseline else [])
    header = ["method"] + [_header(c) for c in section.columns[:1]] + extra + \
        [_header(c) for c in section.columns[1:]] + ["status"]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(section.columns) + len(extra)) + ["---"]) + "|"]
    for row in section.rows:
        cells = [f"`{row.method}`"]
        for i, col in enumerate(section.columns):
            text = fmt_stat(row.stats[col.metric], col.metric, with_n=col.headline)
            if col.speed and row.contended and row.stats[col.metric].n:
                text += "\\" + CONTENDED_MARK  # escaped: a lone * must not open emphasis
            cells.append(f"**{text}**" if row.method in section.best.get(col.metric, ()) else text)
            if i == 0 and section.ties:
                cells += [section.interval(row.method), section.versus_best(row.method)]
            if i == 0 and section.baseline:
                cells.append(section.versus_baseline(row.method))
        why = "; ".join(row.reasons)  # each reason names its status ("skipped: ...")
        status = row.status if row.all_ok else f"{row.status}: {why}" if row.ok_runs else why
        if row.contended:
            status += f"; {row.contended}"
        cells.append(_escape(status))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _header(col) -> str:
    arrow = {True: " ↑", False: " ↓"}.get(col.higher_is_better, "")
    return f"{col.label}{f' ({col.unit})' if col.unit else ''}{arrow}"


def markdown_report(sections: list[Section], title: str) -> str:
    parts = [f"# {title}", "",
             "Mean ± standard deviation over seeds (n = successful runs); 95% CI: bootstrap interval over seeds and, "
             "within them, evaluation examples (one seed: examples only, marked `1 seed`: the seed variance is "
             "unknown); vs best: the difference from the best method with the 95% interval of a paired bootstrap of "
             "the same kind, `tied` when it holds 0. **Bold** headline: every method tied with the best; in the other "
             "columns **bold** is the best value "
             "(↑ higher is better, ↓ lower is better). Speed figures marked \\* come from contended runs (other "
             "processes took part of the machine during their timed steps: see the status column)."]
    for s in sections:
        env = dict(s.env)
        conditions = ", ".join(f"{k} {env[k]}" for k in ("device", "GPU", "git commit", "weights",
                                                         "generation latency") if k in env)
        parts += ["", f"## {s.title}", "", f"budget `{s.budget}`, model `{s.model}`; {conditions}", ""]
        if s.note:
            parts += [f"*Note.* {s.note}", ""]
        parts.append(section_table(s))
    return "\n".join(parts) + "\n"
