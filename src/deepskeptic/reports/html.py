"""A self-contained HTML page: text, tables and matplotlib figures embedded as base64 PNG.

Every string given to a Report is text, escaped here: class names, file names and verdicts come
from the user's data and must not become markup. Matplotlib shows text literally too (no
mathtext): a class folder named ``$\\x$`` is drawn as those characters, not parsed.
"""
from __future__ import annotations

import base64
import html
import io
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
# Labels, titles, legends and tick labels are user data (class and file names): never parse them
# as mathtext or TeX, where a '$' or a backslash changes the text or makes drawing fail.
matplotlib.rcParams.update({"text.parse_math": False, "text.usetex": False})
import matplotlib.pyplot as plt  # noqa: E402

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em} h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
figure{margin:1em 0} figcaption{color:#555;font-size:.9em} img{max-width:100%}
.verdict{background:#f6f8fa;border-left:4px solid #4a7;padding:.5em 1em;margin:.4em 0}
.muted{color:#666;font-size:.9em}
"""


def figure_to_data_uri(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def escape(text: Any) -> str:
    """``text`` as HTML text or attribute value: <, >, &, both quotes escaped."""
    return html.escape(str(text), quote=True)


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


class Report:
    """Build a page section by section, then ``render()`` it to one HTML string."""

    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        level = min(max(int(level), 2), 4)
        self.parts.append(f"<h{level}>{escape(text)}</h{level}>")

    def paragraph(self, text: str, css: str = "") -> None:
        cls = f' class="{escape(css)}"' if css else ""
        self.parts.append(f"<p{cls}>{escape(text)}</p>")

    def verdict(self, text: str) -> None:
        """One verdict sentence, set apart (a comparison's answer per deep model)."""
        self.parts.append(f'<div class="verdict">{escape(text)}</div>')

    def preformatted(self, text: str, caption: str = "") -> None:
        """Text shown as it is, line breaks and spaces kept (generated samples, a gate trace)."""
        cap = f"<p><b>{escape(caption)}</b></p>" if caption else ""
        self.parts.append(f"{cap}<pre style='white-space:pre-wrap;background:#f6f6f6;padding:.6em'>"
                          f"{escape(text)}</pre>")

    def image(self, png: bytes | str, caption: str = "", width: int | None = None, pixelated: bool = False) -> None:
        """An image already encoded: PNG bytes, or a data: URI of an image (e.g. a file `explain`
        wrote, shown with its file name as the caption)."""
        uri = png if isinstance(png, str) else png_data_uri(png)
        if not uri.startswith(("data:image/png;base64,", "data:image/jpeg;base64,", "data:image/gif;base64,")):
            raise ValueError("Report.image takes PNG bytes or a data:image/...;base64 URI")
        size = f' width="{int(width)}"' if width else ""
        style = ' style="image-rendering:pixelated"' if pixelated else ""
        cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
        self.parts.append(f'<figure><img src="{escape(uri)}"{size}{style} alt="{escape(caption)}">{cap}</figure>')

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        head = "".join(f"<th>{escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
        self.parts.append(f"<table><tr>{head}</tr>{body}</table>")

    def figure(self, fig, caption: str = "") -> None:
        cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
        self.parts.append(f'<figure><img src="{figure_to_data_uri(fig)}" alt="{escape(caption)}">{cap}</figure>')

    def render(self) -> str:
        body = "\n".join(self.parts)
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(self.title)}</title>"
                f"<style>{STYLE}</style></head><body><h1>{escape(self.title)}</h1>\n{body}\n</body></html>\n")
