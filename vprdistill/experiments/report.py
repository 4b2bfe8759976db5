"""``report.md`` and a self-contained ``report.html`` (images inlined, no external resources)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Sequence

from vprdistill.experiments.rows import ResultRow
from vprdistill.utils.atomic import atomic_write_bytes, atomic_write_text


def _fmt(value: float, digits: int = 1) -> str:
    return "–" if value != value else f"{value:.{digits}f}"  # NaN check without numpy


def summary_table(rows: Sequence[ResultRow], ns: Sequence[str] = ("1", "5", "10")) -> list[list[str]]:
    """Header and one line per model: name, parameters, R@N..., ms per image, ms per query."""
    header = ["Model", "Params (M)"] + [f"R@{n}" for n in ns] + ["ms / image", "ms / query"]
    body = [
        [row.name, f"{row.parameters / 1e6:.2f}"] + [_fmt(row.recall.get(n, float("nan"))) for n in ns]
        + [_fmt(row.ms_per_image, 2), _fmt(row.ms_per_query, 3)]
        for row in rows
    ]
    return [header] + body


def condition_table(rows: Sequence[ResultRow], n: str = "1") -> list[list[str]]:
    conditions = sorted({c for row in rows for c in row.recall_per_condition})
    counts = {}
    for row in rows:
        counts.update(row.queries_per_condition)
    header = ["Model"] + [f"{c} ({counts.get(c, '?')} q)" for c in conditions]
    body = [[row.name] + [_fmt(row.recall_per_condition.get(c, {}).get(n, float("nan"))) for c in conditions]
            for row in rows]
    return [header] + body


def markdown_table(table: list[list[str]]) -> str:
    header, *body = table
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(line) + " |" for line in body]
    return "\n".join(lines)


def text_table(table: list[list[str]]) -> str:
    """A fixed-width table for the terminal."""
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    rendered = []
    for index, line in enumerate(table):
        rendered.append("  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                                  for i, (cell, width) in enumerate(zip(line, widths))))
        if index == 0:
            rendered.append("  ".join("-" * width for width in widths))
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
) -> tuple[Path, Path]:
    """Write ``report.md`` (figures as PNG files beside it) and a self-contained ``report.html``."""
    out_dir = Path(out_dir)
    figure_dir = out_dir / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    images = {**figures, **grids}
    for name, data in images.items():
        atomic_write_bytes(figure_dir / f"{name}.png", data)

    summary, conditions = summary_table(rows), condition_table(rows)
    commands = [(row.name, row.command) for row in rows if row.command]

    md = [f"# {title}", "", intro, "", f"_{meta}_", "", "## Summary", "", markdown_table(summary), ""]
    md += ["## R@1 per query condition", "", markdown_table(conditions), ""]
    md += ["## Models", ""] + [f"- **{row.name}**: {row.description}" for row in rows] + [""]
    md += ["## Figures", ""] + [f"![{name}](figures/{name}.png)" for name in figures] + [""]
    md += ["## Sample retrievals", "", "Query on the left, then the top 5; green frame = within the threshold, red = wrong.", ""]
    md += [f"### {name}\n\n![{name}](figures/{name}.png)\n" for name in grids]
    if notes:
        md += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    md += ["## Reproduce", ""] + [f"- {name}:\n\n  ```\n  {command}\n  ```" for name, command in commands] + [""]
    md_path = out_dir / "report.md"
    atomic_write_text(md_path, "\n".join(md))

    def inline(name: str) -> str:
        data = base64.b64encode(images[name]).decode()
        return f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'

    body = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(intro)}</p>", f'<p class="meta">{html.escape(meta)}</p>',
            "<h2>Summary</h2>", _html_table(summary), "<h2>R@1 per query condition</h2>", _html_table(conditions),
            "<h2>Models</h2><ul>"]
    body += [f"<li><b>{html.escape(row.name)}</b>: {html.escape(row.description)}</li>" for row in rows]
    body += ["</ul>", "<h2>Figures</h2>", '<div class="figures">'] + [inline(name) for name in figures] + ["</div>"]
    body += ["<h2>Sample retrievals</h2>",
             "<p>Query on the left, then the top 5; green frame = within the threshold, red = wrong.</p>"]
    for name in grids:
        body += [f"<h3>{html.escape(name)}</h3>", inline(name)]
    if notes:
        body += ["<h2>Notes</h2><ul>"] + [f"<li>{html.escape(note)}</li>" for note in notes] + ["</ul>"]
    body += ["<h2>Reproduce</h2>"]
    body += [f"<p>{html.escape(name)}</p><pre>{html.escape(command)}</pre>" for name, command in commands]
    page = (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        + "\n".join(body) + "</body></html>\n"
    )
    html_path = out_dir / "report.html"
    atomic_write_text(html_path, page)
    return md_path, html_path
