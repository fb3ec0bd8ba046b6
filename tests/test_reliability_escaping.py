"""Every user-derived string is shown as text (issue 16, class 5): in report.html (escaped: no tag,
attribute or script of the user's reaches the page), in plots (no mathtext: '$' and backslashes
drawn as they are) and on the terminal (a newline or escape sequence in a file name cannot forge a
second line). Commands write only inside their run folder. One tiny image run is trained on a
folder whose class and file names are hostile."""
from __future__ import annotations

import html.parser

import numpy as np
import pytest
from PIL import Image

from cli_helpers import user_error
from deepskeptic.errors import UserError, printable
from deepskeptic.reports.html import Report, plt
from deepskeptic.runs import Run
from reliability_helpers import quiet_threads

CLASSES = ["<script>alert(1)<!--", "$\\x$ \\frac{1}{0}", "a\"b'c&d<b onmouseover=alert(2)>", "new\nline"]
FILES = ["<img src=x onerror=alert(3)>", "two\nlines", "dollar$\\x$", "plain"]
ALLOWED = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "h4", "p", "b", "table", "tr", "th",
           "td", "figure", "img", "figcaption", "div", "pre"}


class Page(html.parser.HTMLParser):
    """The tags, attributes and text of a page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.attributes, self.text, self.comments = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [name for name, _ in attrs]

    def handle_data(self, data):
        self.text.append(data)

    def handle_comment(self, data):
        self.comments.append(data)


def parse(page: str) -> Page:
    parser = Page()
    parser.feed(page)
    parser.close()
    return parser


def assert_inert(page: str, shown: list[str] = ()) -> None:
    """No tag, attribute or comment of the user's in ``page``; the strings ``shown`` in its text."""
    parsed = parse(page)
    assert set(parsed.tags) <= ALLOWED, set(parsed.tags) - ALLOWED
    assert set(parsed.attributes) <= {"charset", "class", "src", "alt", "width", "style"}, parsed.attributes
    assert not parsed.comments
    text = "".join(parsed.text)
    for s in shown:
        assert s in text, s


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """An image run (cnn, 1 epoch) on a folder whose name, class folders and files are hostile."""
    root = tmp_path_factory.mktemp("escaping")
    data = root / "<b>data&co"
    rng = np.random.default_rng(0)
    for k, name in enumerate(CLASSES):
        (data / name).mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(rng.normal(40 + 50 * k, 20, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(data / name / f"{FILES[i % len(FILES)]}-{i}.png")
    with pytest.MonkeyPatch.context() as monkeypatch:
        quiet_threads(monkeypatch)
        from deepskeptic.cli import main
        assert main(["train", "image", "--data", str(data), "--model", "cnn", "--epochs", "1",
                     "--out", str(root / "run")]) == 0
    return root


def test_an_image_report_with_hostile_names_is_inert(hostile):
    """Class names with '$' and backslashes reach the plots (no mathtext error), and the page holds
    the names as text only."""
    page = (hostile / "run" / "report.html").read_text()
    assert_inert(page, shown=["<b>data&co"])
    assert "<script" not in page and "<b>data" not in page


def test_every_report_method_escapes(tmp_path):
    report = Report(CLASSES[0])
    report.heading(CLASSES[1])
    report.heading(CLASSES[2], level=3)
    report.paragraph(CLASSES[2], css='x" onclick="alert(4)')
    report.verdict("cnn (<script>alert(5)</script>) beats " + CLASSES[3])
    report.preformatted("</pre><script>alert(6)</script>", caption=CLASSES[0])
    report.table([CLASSES[0], "b"], [[CLASSES[2], 1.5], [FILES[0], None]])
    fig, ax = plt.subplots()
    ax.set_title(CLASSES[1])
    ax.set_xticks([0, 1], [CLASSES[1], "\\alpha $x^2$"])
    report.figure(fig, caption=FILES[0])
    report.image(b"\x89PNG\r\n\x1a\n", caption=FILES[1] + '" onload="alert(7)')
    with pytest.raises(ValueError):
        report.image("javascript:alert(8)")
    assert_inert(report.render(), shown=[CLASSES[0], CLASSES[2], FILES[0], "</pre><script>alert(6)</script>"])


def test_a_comparison_report_escapes_its_verdicts_and_model_names(hostile, tmp_path):
    from deepskeptic.compare import write_comparison_report
    from deepskeptic.tasks import get_task
    run = str(hostile / "run")
    stats = {"role": "deep", "test_accuracy_mean": 0.5, "test_accuracy_std": 0.1, "params": 100,
             "flops_per_example": 1000, "train_seconds_mean": 1.0, "epochs_mean": 1.0, "runs": [run]}
    summary = {"task": "image", "metric": "test_accuracy", "seeds": 2,
               "models": {CLASSES[0]: stats, CLASSES[1]: {**stats, "role": "baseline"}},
               "verdicts": [f"{CLASSES[0]} (test_accuracy 0.5) <script>alert(9)</script> beats {CLASSES[1]}."]}
    write_comparison_report(get_task("image"), tmp_path, summary)
    assert_inert((tmp_path / "report.html").read_text(), shown=["<script>alert(9)</script>"])


# --- the terminal --------------------------------------------------------------------------

def test_printable_escapes_what_a_terminal_would_obey():
    assert printable("a\nb\r\tc") == "a\\nb\\r\\tc"
    assert printable("\x1b[31mred\x07") == "\\x1b[31mred\\x07"
    assert printable("abc\u202edcba") == "abc\\u202edcba"          # right-to-left override
    assert printable("caf\udce9.png") == "caf\\xe9.png"             # an undecodable byte of a file name
    assert printable("ümlaut 字 $\\x$") == "ümlaut 字 $\\x$"


def test_a_file_name_with_a_newline_cannot_forge_an_error_line(hostile, tmp_path, capsys):
    line = user_error(capsys, "evaluate", tmp_path / "no\nerror: forged", match=r"no\\nerror: forged")
    assert line.count("error:") == 2 and "\n" not in line
    bad = tmp_path / "evil\nerror: forged\x1b[2K.png"
    bad.write_bytes(b"not an image")
    line = user_error(capsys, "predict", hostile / "run", bad, match=r"evil\\nerror: forged\\x1b\[2K")


# --- writing only inside the run -----------------------------------------------------------

def test_run_inside_refuses_folders_that_lead_out_of_the_run(tmp_path):
    run = Run(tmp_path / "run")
    run.path.mkdir()
    assert run.inside("explain") == run.path / "explain" and (run.path / "explain").is_dir()
    (tmp_path / "outside").mkdir()
    (run.path / "export").symlink_to(tmp_path / "outside")
    with pytest.raises(UserError, match=r"export is a symbolic link"):
        run.inside("export")
    (run.path / "notes").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        run.inside("notes")
    (tmp_path / "linked-run").symlink_to(run.path)           # the run reached through a link: fine
    assert Run(tmp_path / "linked-run").inside("explain").is_dir()


def test_explain_does_not_follow_a_symlinked_explain_folder_out_of_the_run(hostile, tmp_path, capsys):
    run = tmp_path / "run"
    import shutil
    shutil.copytree(hostile / "run", run)
    (tmp_path / "outside").mkdir()
    (run / "explain").symlink_to(tmp_path / "outside")
    image = next((hostile / "<b>data&co" / "plain").parent.glob("*/plain-3.png"))
    user_error(capsys, "explain", run, image, match="symbolic link")
    assert not any((tmp_path / "outside").iterdir())
