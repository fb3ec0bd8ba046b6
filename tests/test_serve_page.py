"""The page of `deepskeptic serve` in a real headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium): open it, upload an image and see the predicted class, type a
text and see its class, upload a bad file and see the error in words. A failing test saves a
screenshot (its path is in the failure message)."""
from __future__ import annotations

import contextlib
import csv
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepskeptic.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"),
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]
selenium = pytest.importorskip("selenium")
pytest.importorskip("fastapi")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

WAIT = 30   # seconds for a result to appear (a busy 2-core machine)
SERVED = ["cnn", "words", "words-lstm", "chars", "sales"]


# ------------------------------------------------------------------ runs, server, browser

@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A digits cnn, a text logreg and tiny LSTMs for text, textgen and forecast (whose gates the page
    draws), with one-line reports (the real ones are tested elsewhere)."""
    from deepskeptic.fileio import atomic_write_text
    from deepskeptic.tasks import TASKS
    root = tmp_path_factory.mktemp("page")
    table = root / "docs.csv"
    words = {"sport": "ball goal team match score".split(), "food": "bread cheese apple soup cook".split()}
    rng = np.random.default_rng(0)
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(120):
            label = ["sport", "food"][i % 2]
            w.writerow([" ".join(rng.choice(words[label], 6)), label])
    with pytest.MonkeyPatch.context() as mp:
        for task in TASKS.values():
            mp.setattr(type(task), "write_report",
                       lambda self, run, prepared=None, metrics=None: atomic_write_text(run.report_path, "<p>report</p>"))
        assert main(["train", "image", "--data", "digits", "--model", "cnn", "--epochs", "1", "--limit", "200",
                     "--out", str(root / "cnn"), "--no-progress"]) == 0
        assert main(["train", "text", "--data", str(table), "--model", "logreg", "--epochs", "1",
                     "--out", str(root / "words"), "--no-progress"]) == 0
        (root / "tiny.toml").write_text("[model]\nhidden = 8\nembed = 8\n")
        assert main(["train", "text", "--data", str(table), "--model", "lstm", "--epochs", "1", "--config",
                     str(root / "tiny.toml"), "--out", str(root / "words-lstm"), "--no-progress"]) == 0
        corpus = root / "corpus.txt"
        corpus.write_text("\n".join(" ".join(rng.choice(words["food"], 8)) for _ in range(100)) + "\n")
        assert main(["train", "textgen", "--data", str(corpus), "--model", "lstm", "--epochs", "1", "--hidden", "8",
                     "--embed", "8", "--seq-len", "16", "--batch-size", "4", "--out", str(root / "chars"),
                     "--no-progress"]) == 0
        t = np.arange(60)
        sales = root / "sales.csv"
        sales.write_text("month,sales\n" + "".join(f"{2000 + i // 12}-{i % 12 + 1:02d}-01,{v:.3f}\n" for i, v in
                                                     enumerate(50 + 0.5 * t + 8 * np.sin(2 * np.pi * t / 12))))
        (root / "forecast.toml").write_text("[model]\nhidden = 8\nmembers = 1\n")
        assert main(["train", "forecast", "--data", str(sales), "--target", "sales", "--model", "lstm",
                     "--horizon", "3", "--origins", "2", "--lookback", "12", "--epochs", "1", "--config",
                     str(root / "forecast.toml"), "--out", str(root / "sales"), "--no-progress"]) == 0
    return {"root": root, "cnn": root / "cnn", "words": root / "words", "words-lstm": root / "words-lstm",
            "chars": root / "chars", "sales": root / "sales", "sales.csv": sales}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(runs):
    """The app on a real uvicorn at 127.0.0.1 on a free port, stopped after the tests."""
    import uvicorn

    from deepskeptic.serve import create_app
    app = create_app([str(runs[name]) for name in SERVED])
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{srv.config.port}"
    srv.should_exit = True
    thread.join(timeout=15)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-extensions", "--window-size=1280,1600",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SE_OFFLINE", "true")        # Selenium Manager must not look for drivers online
        driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser, server):
    """The page, freshly loaded, once its runs are listed."""
    browser.get(server + "/")
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".panel[data-model]"))
    return browser


@contextlib.contextmanager
def screenshot_on_failure(driver, name: str, folder: Path):
    """Run the block; if it fails, save the window as FOLDER/NAME.png and say where."""
    try:
        yield
    except BaseException as exc:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        driver.save_screenshot(str(path))
        raise AssertionError(f"{exc!r}; screenshot: {path}; page text: {driver.find_element(By.TAG_NAME, 'body').text[:800]}") from exc


def panel(driver, name: str):
    return driver.find_element(By.CSS_SELECTOR, f'.panel[data-model="{name}"]')


def wait_text(driver, element, selector: str) -> str:
    """The text of the first ``selector`` inside ``element`` once it has some."""
    def ready(_):
        found = element.find_elements(By.CSS_SELECTOR, selector)
        return found[0].text.strip() if found and found[0].text.strip() else False
    return WebDriverWait(driver, WAIT).until(ready)


# ------------------------------------------------------------------ the tests

def test_page_lists_runs_and_an_uploaded_image_gets_its_class(page, runs, tmp_path, tmp_path_factory):
    from deepskeptic.api import load
    from sklearn.datasets import load_digits
    image = (load_digits().images[3] * 15).astype(np.uint8)
    path = tmp_path / "three.png"
    Image.fromarray(image).save(path)
    expected = load(runs["cnn"]).predict([Image.open(path)])[0]["top"][0]["class"]
    with screenshot_on_failure(page, "image-upload", tmp_path_factory.getbasetemp() / "screenshots"):
        assert f"{len(SERVED)} run(s) served" in page.find_element(By.ID, "status").text
        cards = page.find_elements(By.CSS_SELECTOR, "article.card h3")
        assert [c.text for c in cards] == SERVED
        box = panel(page, "cnn")
        box.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(path))
        assert wait_text(page, box, ".predicted") == expected
        assert len(box.find_elements(By.CSS_SELECTOR, ".bar")) == 5               # top-5 bars
        WebDriverWait(page, WAIT).until(lambda d: box.find_elements(By.CSS_SELECTOR, 'img[alt="Grad-CAM"]'))
        severe = [e for e in page.get_log("browser") if e["level"] == "SEVERE"]
        assert severe == []                                                         # no CSP violation, no error


def test_a_typed_text_gets_its_class(page, runs, tmp_path_factory):
    from deepskeptic.api import load
    text = "cheese soup <b>bread</b> cook"
    expected = load(runs["words"]).predict([text])[0]["top"][0]["class"]
    with screenshot_on_failure(page, "text", tmp_path_factory.getbasetemp() / "screenshots"):
        box = panel(page, "words")
        box.find_element(By.TAG_NAME, "textarea").send_keys(text)
        box.find_element(By.XPATH, ".//button[text()='Classify']").click()
        assert wait_text(page, box, ".predicted") == expected == "food"
        assert box.find_elements(By.TAG_NAME, "b") == []                           # typed markup stays text
        assert box.find_elements(By.CSS_SELECTOR, "svg.heat") == []                # a logreg has no gates


def test_a_bad_file_shows_an_error_in_words(page, tmp_path, tmp_path_factory):
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"this is not a picture")
    with screenshot_on_failure(page, "bad-file", tmp_path_factory.getbasetemp() / "screenshots"):
        box = panel(page, "cnn")
        box.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(bad))
        message = wait_text(page, box, ".error")
        assert "not-an-image.png is not an image" in message
        assert box.find_elements(By.CSS_SELECTOR, ".predicted") == []


def heat_maps(driver, box, count: int) -> dict[str, object]:
    """The gate heat maps in ``box`` once ``count`` of them are drawn: {gate name: its svg}."""
    WebDriverWait(driver, WAIT).until(lambda _: len(box.find_elements(By.CSS_SELECTOR, "svg.heat")) >= count)
    return {svg.get_attribute("data-gate"): svg for svg in box.find_elements(By.CSS_SELECTOR, "svg.heat")}


def cells_of(svg) -> int:
    return len(svg.find_elements(By.TAG_NAME, "rect"))


def test_a_text_lstm_draws_a_heat_map_per_gate_with_the_text_escaped(page, runs, tmp_path_factory):
    from deepskeptic.api import load
    from deepskeptic.serve.use import text_gates
    text = "soup <img src=x onerror=alert(1)> & bread"
    predictor = load(runs["words-lstm"]).predictor
    expected = text_gates(predictor.model, predictor.reader, text, None)          # what explain computes
    page.get_log("browser")                                                         # earlier tests' lines
    with screenshot_on_failure(page, "text-gates", tmp_path_factory.getbasetemp() / "screenshots"):
        box = panel(page, "words-lstm")
        box.find_element(By.TAG_NAME, "textarea").send_keys(text)
        box.find_element(By.XPATH, ".//button[text()='Classify']").click()
        assert wait_text(page, box, ".predicted")
        maps = heat_maps(page, box, 4)
        assert sorted(maps) == ["forget", "hidden", "input", "output"]             # one heat map per gate
        units = len(expected["cells"])
        for svg in maps.values():                                                  # a cell per (character, unit)
            assert cells_of(svg) == len(text) * units
        labels = [t.get_attribute("textContent") for t in maps["forget"].find_elements(By.TAG_NAME, "text")]
        assert "".join(labels[units:]) == text.replace(" ", "·")                   # the characters, as text
        assert box.find_elements(By.TAG_NAME, "img") == []                         # the markup was not parsed
        first = maps["forget"].find_element(By.TAG_NAME, "rect").find_element(By.TAG_NAME, "title")
        assert first.get_attribute("textContent").endswith(f"{expected['forget'][0][0]:.4g}".rstrip("0").rstrip("."))
        assert [e for e in page.get_log("browser") if e["level"] == "SEVERE"] == []


def test_a_textgen_lstm_draws_the_gates_of_its_generated_text(page, tmp_path_factory):
    with screenshot_on_failure(page, "textgen-gates", tmp_path_factory.getbasetemp() / "screenshots"):
        box = panel(page, "chars")
        box.find_element(By.CSS_SELECTOR, "input[type=text]").send_keys("soup")
        length = box.find_element(By.CSS_SELECTOR, "input[type=number]")
        length.clear()
        length.send_keys("40")
        box.find_element(By.XPATH, ".//button[text()='Generate']").click()
        generated = WebDriverWait(page, WAIT).until(
            lambda _: (lambda t: t if len(t) >= 44 else False)(box.find_element(By.CSS_SELECTOR, "pre.generated")
                                                               .get_attribute("textContent")))
        WebDriverWait(page, WAIT).until(lambda _: box.find_element(By.XPATH, ".//button[text()='Generate']").is_enabled())
        box.find_element(By.XPATH, ".//button[text()='Show LSTM gates']").click()
        maps = heat_maps(page, box, 4)
        assert sorted(maps) == ["forget", "hidden", "input", "output"]
        assert cells_of(maps["input"]) % len(generated) == 0 and cells_of(maps["input"]) >= len(generated)


def test_an_uploaded_csv_draws_its_history_then_the_forecast_and_the_gates(page, runs, tmp_path_factory):
    csv_path = runs["sales.csv"]
    rows = csv_path.read_text().splitlines()[1:]
    with screenshot_on_failure(page, "forecast", tmp_path_factory.getbasetemp() / "screenshots"):
        box = panel(page, "sales")
        box.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(csv_path))
        WebDriverWait(page, WAIT).until(lambda _: box.find_elements(By.CSS_SELECTOR, "polyline.forecast"))
        points = {}
        for name in ("history", "forecast"):
            line = box.find_element(By.CSS_SELECTOR, f"polyline.{name}").get_attribute("points").split()
            points[name] = [float(p.split(",")[0]) for p in line]
        assert len(points["history"]) == len(rows) and len(points["forecast"]) == 3
        assert max(points["history"]) < min(points["forecast"])                   # the forecast comes after it
        assert box.find_element(By.TAG_NAME, "table").text.splitlines()[-1].startswith("2005-03")
        assert "from 2000-01 to 2005-03" in box.find_element(By.CSS_SELECTOR, "svg.chart").get_attribute("textContent")
        box.find_element(By.XPATH, ".//button[text()='Show LSTM gates']").click()
        maps = heat_maps(page, box, 6)
        assert sorted(maps) == ["candidate", "cell", "forget", "hidden", "input", "output"]
        assert all(cells_of(svg) == 12 * 4 for svg in maps.values())               # lookback 12, 4 units
