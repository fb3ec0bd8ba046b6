"""Report pieces both GAN tasks (`gan`, `cyclegan`) share: PNGs the run wrote, embedded as they are,
and the strip of one row of each epoch's sample grid (RUN/samples/epoch-NNN.png)."""
from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
from PIL import Image

from deepskeptic.reports.html import Report, plt
from deepskeptic.runs import Run


def png_figure(report: Report, path: Path, caption: str, scale: int = 3) -> None:
    """The PNG at ``path`` (if there is one), shown ``scale`` times its size with sharp pixels."""
    if not path.is_file():
        return
    data = path.read_bytes()
    with Image.open(path) as im:
        width = im.size[0] * scale
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    report.parts.append(f'<figure><img src="{uri}" width="{min(width, 1000)}" style="image-rendering:pixelated" '
                        f'alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>')


def epoch_strip(run: Run, max_rows: int = 12, row: int = 0):
    """Row ``row`` of each epoch's grid in RUN/samples/, one under the other (at most ``max_rows`` epochs)."""
    files = sorted((run.path / "samples").glob("epoch-*.png"))
    if not files:
        return None
    picks = sorted({round(i) for i in np.linspace(0, len(files) - 1, min(max_rows, len(files)))})
    rows = []
    for i in picks:
        with Image.open(files[i]) as im:
            a = np.asarray(im)
        side = run.config["data_info"]["image_size"]      # square images, 1-px gaps between them
        rows.append((int(files[i].stem.split("-")[1]), a[row * (side + 1):row * (side + 1) + side]))
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 1.05 * len(rows)), squeeze=False)
    for ax, (epoch, strip) in zip(axes[:, 0], rows):
        ax.imshow(strip, cmap="gray" if strip.ndim == 2 else None, vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(f"epoch {epoch}", rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    return fig
