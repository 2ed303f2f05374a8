"""The page: plain HTML with its pictures inline and one small inline script that sorts tables.

Nothing is fetched: no stylesheet, font or script from anywhere, and every image is a data: URI, so the
file opens from file:// on a laptop after `scp`, offline. `write_page` writes it to a temp name and
renames it into place.
"""

from __future__ import annotations

import html
import os
import time
from pathlib import Path

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1280px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}h3{margin-bottom:.3em}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;
vertical-align:top}th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer}td.err{white-space:pre-wrap;font-family:monospace;font-size:12px;max-width:60em}
img{max-width:100%}.note{color:#666}.legend{display:flex;gap:1em;align-items:center}
.bad{color:#b00020;font-weight:600}.ok{color:#176f2c}
"""

SORT_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th, column) {
  th.title = 'sort';
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], rows = Array.from(body.rows);
    var index = Array.from(th.parentNode.children).indexOf(th), up = th.dataset.up !== '1';
    th.dataset.up = up ? '1' : '0';
    var key = function (row) { var t = row.cells[index].textContent.trim(), n = parseFloat(t.replace(/[,%]/g, ''));
                               return isNaN(n) ? t.toLowerCase() : n; };
    rows.sort(function (a, b) { var x = key(a), y = key(b); return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1); });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""


def esc(value) -> str:
    return html.escape("" if value is None else str(value))


def table(header: list[str], rows: list[list], numeric: set[int] = frozenset(), sortable: bool = False,
          classes: dict[int, str] | None = None, table_id: str = "") -> str:
    """An HTML table; `numeric` columns are right-aligned; values are escaped."""
    classes = dict(classes or {})
    for column in numeric:
        classes.setdefault(column, "n")
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    def cell(i, value):
        return f'<td class="{classes[i]}">{esc(value)}</td>' if i in classes else f"<td>{esc(value)}</td>"

    body = "".join("<tr>" + "".join(cell(i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    attributes = (' class="sortable"' if sortable else "") + (f' id="{table_id}"' if table_id else "")
    return f"<table{attributes}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def image(uri: str | None, alt: str) -> str:
    return f'<img src="{uri}" alt="{esc(alt)}">' if uri else ""


def page(title: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole document from (anchor, heading, body HTML) sections, with a table of contents."""
    contents = " · ".join(f'<a href="#{anchor}">{esc(heading)}</a>' for anchor, heading, _ in sections)
    body = "".join(f'<section id="{anchor}"><h2>{esc(heading)}</h2>{content}</section>'
                   for anchor, heading, content in sections)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1><p class=\"note\">written {stamp} by tsnpipe "
            f"report</p><nav>{contents}</nav>{body}<script>{SORT_SCRIPT}</script></body></html>")


def write_page(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path
