"""One self-contained HTML page: figures embedded as base64 PNG, tables inline."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ssl_jax.io.atomic import write_text_atomic

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1150px;margin:24px auto;
padding:0 16px;color:#222}
h1{font-size:1.6em;margin-bottom:0}h2{margin-top:1.8em;border-bottom:1px solid #ddd}
.warning{background:#fde8e8;border:2px solid #d33;color:#900;padding:10px 14px;font-weight:600;
margin:12px 0}
.meta{color:#666;font-size:.9em}
figure{margin:14px 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}
table{border-collapse:collapse;font-size:.85em;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
"""


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(Path(path).name)}">'


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, digits: int = 3) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.{digits}f}" if v == v else "—"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in columns)
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(path: Path, *, title: str, subtitle: str, warning: str | None,
                 sections: Sequence[tuple[str, Sequence[tuple[str, Any]]]]) -> Path:
    """sections: (heading, items); an item is ("figure", (png_path, caption)),
    ("table", html_string) or ("text", plain_text)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1><p class='meta'>{html.escape(subtitle)}</p>"]
    if warning:
        parts.append(f"<div class='warning'>⚠ {html.escape(warning)}</div>")
    for heading, items in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        for kind, payload in items:
            if kind == "figure":
                png, caption = payload
                parts.append(f"<figure>{_img(png)}<figcaption>{html.escape(caption)}"
                             f" <a href='{html.escape(Path(png).name)}'>[png]</a></figcaption>"
                             "</figure>")
            elif kind == "table":
                parts.append(payload)
            elif kind == "text":
                parts.append(f"<p>{html.escape(payload)}</p>")
            else:
                raise ValueError(f"unknown report item kind {kind!r}")
    parts.append("</body></html>")
    return write_text_atomic(path, "".join(parts))
