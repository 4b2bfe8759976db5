"""``report.md`` and a self-contained ``report.html`` (images inlined, no external resources).

Beside the trained models a report shows their baselines (the thumbnail and
each network untrained, ``experiments/baselines.py``), the 95 % bootstrap
interval of every R@1, and paired comparisons of each trained model with its
baselines on the same queries (``eval/statistics.py``).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path

from vprdistill.eval.statistics import detectable_difference, paired_comparison
from vprdistill.experiments.rows import ResultRow
from vprdistill.utils.atomic import atomic_write_bytes, atomic_write_text


def _fmt(value: float, digits: int = 1) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def _interval(row: ResultRow, n: str) -> str:
    interval = row.recall_ci.get(n)
    return f"[{interval[0]:.1f}, {interval[1]:.1f}]" if interval else "–"


def summary_table(rows: Sequence[ResultRow], ns: Sequence[str] = ("1", "5", "10"), ci_n: str = "1") -> list[list[str]]:
    """Header and one line per model: name, parameters, R@N..., the interval of R@``ci_n``, ms per image and query."""
    level = rows[0].ci_level if rows else 0.95
    header = (
        ["Model", "Params (M)"]
        + [f"R@{n}" for n in ns]
        + [f"R@{ci_n} {100 * level:g} % CI"]
        + ["ms / image", "ms / query"]
    )
    body = [
        [row.name, f"{row.parameters / 1e6:.2f}"]
        + [_fmt(row.recall.get(n, float("nan"))) for n in ns]
        + [_interval(row, ci_n), _fmt(row.ms_per_image, 2), _fmt(row.ms_per_query, 3)]
        for row in rows
    ]
    return [header] + body


def _paired_cell(row: ResultRow, baseline: ResultRow | None, n: str) -> tuple[str, str]:
    """``(difference [interval], p)`` of ``row`` − ``baseline`` at R@``n``; dashes when either lacks hits."""
    if baseline is None or n not in row.hits or n not in baseline.hits or len(row.hits[n]) != len(baseline.hits[n]):
        return "–", "–"
    result = paired_comparison(row.hits[n], baseline.hits[n], level=row.ci_level)
    return f"{result.difference:+.1f} [{result.low:+.1f}, {result.high:+.1f}]", f"{result.p_value:.2g}"


def comparison_table(rows: Sequence[ResultRow], baselines: Sequence[ResultRow], n: str = "1") -> list[list[str]]:
    """Each trained row against its untrained network and against each parameter-free baseline, at R@``n``.

    Differences are in percentage points, paired over the same queries: the
    bootstrap interval of the mean per-query difference and the exact McNemar
    p-value (``eval.statistics.paired_comparison``).
    """
    untrained = {b.baseline_for: b for b in baselines if b.kind == "untrained"}
    references = [b for b in baselines if b.kind == "baseline"]
    header = ["Model", f"R@{n}", f"− untrained (R@{n} points)", "p"]
    for reference in references:
        header += [f"− {reference.name}", "p"]
    body = []
    for row in rows:
        line = [row.name, _fmt(row.recall.get(n, float("nan"))), *_paired_cell(row, untrained.get(row.name), n)]
        for reference in references:
            line += list(_paired_cell(row, reference, n))
        body.append(line)
    return [header] + body


def detectable_note(rows: Sequence[ResultRow], n: str = "1") -> str:
    """One sentence: the smallest R@``n`` gap between two rows that the number of queries can show."""
    counted = [row for row in rows if n in row.hits and n in row.recall]
    if not counted:
        return ""
    queries = len(counted[0].hits[n])
    recall = sum(row.recall[n] for row in counted) / len(counted)
    level = counted[0].ci_level
    gap = detectable_difference(recall, queries, level)
    return (
        f"With {queries} queries and R@{n} near {recall:.0f} %, two independent figures must differ by at least "
        f"{gap:.1f} points to be told apart at the {100 * level:g} % level (normal approximation "
        f"z·sqrt(2p(1−p)/n)); paired comparisons on the same queries, as in the table above, can be tighter."
    )


def condition_table(rows: Sequence[ResultRow], n: str = "1") -> list[list[str]]:
    conditions = sorted({c for row in rows for c in row.recall_per_condition})
    counts = {}
    for row in rows:
        counts.update(row.queries_per_condition)
    header = ["Model"] + [f"{c} ({counts.get(c, '?')} q)" for c in conditions]
    body = [
        [row.name] + [_fmt(row.recall_per_condition.get(c, {}).get(n, float("nan"))) for c in conditions]
        for row in rows
    ]
    return [header] + body


def markdown_table(table: list[list[str]]) -> str:
    header, *body = table
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(line) + " |" for line in body]
    return "\n".join(lines)


def text_table(table: list[list[str]]) -> str:
    """A fixed-width table for the terminal."""
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    # The first column is left-aligned, the figures right-aligned; a rule under the header.
    rendered = [
        "  ".join([line[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(line[1:], widths[1:])])
        for line in table
    ]
    rendered.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(rendered)


def _html_table(table: list[list[str]]) -> str:
    header, *body = table
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in line) + "</tr>" for line in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


_STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead { background: #f2f2f2; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0; }
code, pre { background: #f6f6f6; font-size: 0.88em; } pre { padding: 0.6em; overflow-x: auto; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; } .figures img { max-width: 540px; }
.meta { color: #666; font-size: 0.9em; }
"""


def write_report(
    out_dir: str | Path,
    title: str,
    intro: str,
    rows: Sequence[ResultRow],
    figures: dict[str, bytes],
    grids: dict[str, bytes],
    meta: str,
    notes: Sequence[str] = (),
    baselines: Sequence[ResultRow] = (),
) -> tuple[Path, Path]:
    """Write ``report.md`` (figures as PNG files beside it) and a self-contained ``report.html``.

    ``baselines``: rows of kind ``untrained`` or ``baseline``, shown in their own
    table and compared with ``rows`` (:func:`comparison_table`).
    """
    out_dir = Path(out_dir)
    figure_dir = out_dir / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    images = {**figures, **grids}
    for name, data in images.items():
        atomic_write_bytes(figure_dir / f"{name}.png", data)

    summary, conditions = summary_table(rows), condition_table([*rows, *baselines])
    commands = [(row.name, row.command) for row in [*rows, *baselines] if row.command]
    baseline_text = (
        "The same split without training: the thumbnail baseline (no parameters) and each network at its "
        "initialisation (same config and seed, no training step). A trained model has learnt something where it "
        "beats both by more than the intervals allow."
    )
    comparison_text = (
        "Trained minus baseline, in R@1 points, over the same queries: bootstrap 95 % interval of the per-query "
        "difference and exact McNemar p-value."
    )
    baseline_sections: list[tuple[str, str, list[list[str]] | None]] = []
    if baselines:
        baseline_sections = [
            ("Baselines", baseline_text, summary_table(baselines)),
            ("Trained against baselines", comparison_text, comparison_table(rows, baselines)),
        ]
    detectable = detectable_note([*rows, *baselines])

    md = [f"# {title}", "", intro, "", f"_{meta}_", "", "## Summary", "", markdown_table(summary), ""]
    for heading, text, table in baseline_sections:
        md += [f"## {heading}", "", text, "", markdown_table(table), ""]
    if detectable:
        md += [detectable, ""]
    md += ["## R@1 per query condition", "", markdown_table(conditions), ""]
    md += ["## Models", ""] + [f"- **{row.name}**: {row.description}" for row in [*rows, *baselines]] + [""]
    md += ["## Figures", ""] + [f"![{name}](figures/{name}.png)" for name in figures] + [""]
    md += [
        "## Sample retrievals",
        "",
        "Query on the left, then the top 5; green frame = within the threshold, red = wrong.",
        "",
    ]
    md += [f"### {name}\n\n![{name}](figures/{name}.png)\n" for name in grids]
    if notes:
        md += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    md += ["## Reproduce", ""] + [f"- {name}:\n\n  ```\n  {command}\n  ```" for name, command in commands] + [""]
    md_path = out_dir / "report.md"
    atomic_write_text(md_path, "\n".join(md))

    def inline(name: str) -> str:
        data = base64.b64encode(images[name]).decode()
        return f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'

    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(intro)}</p>",
        f'<p class="meta">{html.escape(meta)}</p>',
        "<h2>Summary</h2>",
        _html_table(summary),
    ]
    for heading, text, table in baseline_sections:
        body += [f"<h2>{html.escape(heading)}</h2>", f"<p>{html.escape(text)}</p>", _html_table(table)]
    if detectable:
        body += [f"<p>{html.escape(detectable)}</p>"]
    body += ["<h2>R@1 per query condition</h2>", _html_table(conditions), "<h2>Models</h2><ul>"]
    body += [f"<li><b>{html.escape(row.name)}</b>: {html.escape(row.description)}</li>" for row in [*rows, *baselines]]
    body += ["</ul>", "<h2>Figures</h2>", '<div class="figures">'] + [inline(name) for name in figures] + ["</div>"]
    body += [
        "<h2>Sample retrievals</h2>",
        "<p>Query on the left, then the top 5; green frame = within the threshold, red = wrong.</p>",
    ]
    for name in grids:
        body += [f"<h3>{html.escape(name)}</h3>", inline(name)]
    if notes:
        body += ["<h2>Notes</h2><ul>"] + [f"<li>{html.escape(note)}</li>" for note in notes] + ["</ul>"]
    body += ["<h2>Reproduce</h2>"]
    body += [f"<p>{html.escape(name)}</p><pre>{html.escape(command)}</pre>" for name, command in commands]
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )
    html_path = out_dir / "report.html"
    atomic_write_text(html_path, page)
    return md_path, html_path
