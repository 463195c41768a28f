"""deployer.report: counts read from predictions.csv, the terminal summary, and the HTML
report, rendered by a real headless Chromium (Debian's `chromium`; scripts/ensure-chromium.sh
installs it)."""
from __future__ import annotations

import csv
import html
import shutil
import stat
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deployer import report
from deployer.entities import JobSummary
from deployer.report import (LabelCheck, PredictionStats, ReportError, check_labels,
                             class_summary_rows, failed_files_of, format_class_summary,
                             render_report, summarize_predictions, write_report)
from tests.support.browser import locate_chromium, run_chromium
from workspace.settings import REPO_ROOT

ENSURE_CHROMIUM = REPO_ROOT / "scripts" / "ensure-chromium.sh"
IRIS_CSV = REPO_ROOT / "data" / "iris_csv.csv"


def write_predictions(path: Path, rows) -> Path:
    """Write rows the way the scoring engine does: csv.writer, no header, '\\n' lines."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        for row in rows:
            writer.writerow(row)
    return path


def predictions_rows(per_file: dict[str, dict[str, int]]) -> list[tuple[int, str, str]]:
    rows = []
    for file_name, per_class in per_file.items():
        index = 0
        for label, count in per_class.items():
            for _ in range(count):
                rows.append((index, label, file_name))
                index += 1
    return rows


def job(**overrides) -> JobSummary:
    fields = dict(name="batchjob-7f3a", status="Completed", endpoint="iris-endpoint",
                  deployment="iris-blue", input="data/iris-input", files_total=3, files_failed=0)
    fields.update(overrides)
    return JobSummary(**fields)


# ------------------------------------------------------------------------ summarize_predictions

def test_counts_per_class_and_per_file_with_quoted_values(tmp_path):
    rows = predictions_rows({
        "iris, part 1.csv": {"setosa": 4, "versicolor": 2},
        'say "hi".csv': {"virginica": 3},
        "line\nbreak.csv": {"setosa": 1},
        "plain.csv": {"label, with comma": 2, "versicolor": 1},
    })
    path = write_predictions(tmp_path / "predictions.csv", rows)
    assert '"iris, part 1.csv"' in path.read_text()  # the writer quoted it

    stats = summarize_predictions(path)

    assert stats.rows == len(rows) == 13
    assert stats.per_class == {"label, with comma": 2, "setosa": 5, "versicolor": 3, "virginica": 3}
    assert list(stats.per_class) == sorted(stats.per_class)
    assert stats.per_file == {"iris, part 1.csv": 6, 'say "hi".csv': 3, "line\nbreak.csv": 1,
                              "plain.csv": 3}
    assert list(stats.per_file) == ["iris, part 1.csv", 'say "hi".csv', "line\nbreak.csv",
                                    "plain.csv"]  # input order
    assert stats.share("setosa") == pytest.approx(5 / 13)


def test_counts_add_up_across_record_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "READ_BLOCK_BYTES", 4096)  # forces dozens of record batches
    labels = ["setosa", "versicolor", "virginica"]
    rows = [(i % 500, labels[(i * 7) % 3 if i % 11 else 0], f"part-{i // 500:03d}.csv")
            for i in range(20_000)]
    path = write_predictions(tmp_path / "predictions.csv", rows)
    assert path.stat().st_size > 20 * 4096

    stats = summarize_predictions(path)

    assert stats.rows == 20_000
    assert stats.per_class == dict(sorted(Counter(r[1] for r in rows).items()))
    assert stats.per_file == dict(Counter(r[2] for r in rows))
    assert list(stats.per_file)[:3] == ["part-000.csv", "part-001.csv", "part-002.csv"]


def test_numeric_labels_stay_labels(tmp_path):
    path = write_predictions(tmp_path / "predictions.csv", [(0, 2, "a.csv"), (1, 0, "a.csv"),
                                                              (2, 2, "a.csv")])
    assert summarize_predictions(path).per_class == {"0": 1, "2": 2}


def test_empty_predictions_file(tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_bytes(b"")

    stats = summarize_predictions(path)

    assert stats == PredictionStats(rows=0)
    assert format_class_summary(stats) == ["No rows were scored."]
    assert class_summary_rows(stats) == []
    page = render_report(stats, job(status="Failed", files_failed=3), 1.0,
                         [("a.csv", "bad"), ("b.csv", "bad"), ("c.csv", "bad")])
    assert 'id="no-rows"' in page and "<svg" not in page
    assert 'id="no-files"' in page


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ReportError, match="No predictions file at .*nothing.csv"):
        summarize_predictions(tmp_path / "nothing.csv")


@pytest.mark.parametrize("content", [
    "row,prediction,file_name\n0,setosa,a.csv\n",  # a header line
    "0,setosa,a.csv\n1,setosa\n",  # a short line
    "0,setosa,a.csv,extra\n",  # a long line
    "setosa,0,a.csv\n",  # columns in another order
])
def test_not_a_predictions_file_is_refused(tmp_path, content):
    path = tmp_path / "predictions.csv"
    path.write_text(content)
    with pytest.raises(ReportError, match="is not a predictions file"):
        summarize_predictions(path)


# ------------------------------------------------------------------------ terminal summary

def test_class_summary_lines_are_aligned():
    stats = PredictionStats(rows=1500, per_class={"setosa": 1000, "versicolor": 499, "virginica": 1},
                            per_file={"a.csv": 1500})
    assert format_class_summary(stats) == [
        "class        rows   share",
        "setosa      1,000   66.7%",
        "versicolor    499   33.3%",
        "virginica       1    0.1%",
        "total       1,500  100.0%",
    ]
    assert class_summary_rows(stats)[-1] == ("total", "1,500", "100.0%")


def test_failed_files_of_summary():
    summary = job(failed_files=[{"file": "a.csv", "message": "ValueError: x"}, ("b.csv", "timeout")])
    assert failed_files_of(summary) == [("a.csv", "ValueError: x"), ("b.csv", "timeout")]
    assert failed_files_of(job()) == []


# ------------------------------------------------------------------------ render_report

def small_stats() -> PredictionStats:
    return PredictionStats(rows=96, per_class={"setosa": 60, "versicolor": 30, "virginica": 6},
                           per_file={"iris_a.csv": 40, "iris, b.csv": 56})


def test_report_shows_job_counts_and_rate():
    page = render_report(small_stats(), job(created="2026-11-22T07:00:00Z"), 2.0, [])

    for text in ("batchjob-7f3a", "Completed", "iris-endpoint", "iris-blue", "data/iris-input",
                 "2026-11-22T07:00:00Z", "48.0", "No failed files", "iris, b.csv"):
        assert text in page, text
    assert page.count('class="bar"') == 3
    assert 'data-label="setosa" data-count="60"' in page
    assert "62.5%" in page and "31.2%" in page  # shares of 60 and 30 in 96


def test_report_without_elapsed_time_says_na():
    page = render_report(small_stats(), job(), 0.0, [])
    assert '<div class="card" id="rows-per-second"><div class="value">n/a</div>' in page


def test_report_counts_failed_files_it_cannot_name():
    page = render_report(small_stats(), job(files_failed=2), 3.0, [])
    assert "2 files failed" in page and "No failed files" not in page


def test_report_escapes_every_value_and_loads_nothing():
    hostile = '<script>alert("x")</script>&'
    summary = job(name=hostile, status=hostile, endpoint=hostile, deployment=hostile,
                  input=hostile, error=hostile)
    stats = PredictionStats(rows=2, per_class={hostile: 1, "setosa": 1}, per_file={hostile: 2})

    page = render_report(stats, summary, 1.0, [(hostile, hostile)])

    assert "<script" not in page.lower()
    assert page.count(html.escape(hostile)) >= 10
    for fetches in ("src=", "href=", "url(", "<link", "@import", "://"):
        assert fetches not in page, fetches


def test_report_lists_the_first_files_only(monkeypatch):
    monkeypatch.setattr(report, "MAX_FILES_LISTED", 2)
    stats = PredictionStats(rows=10, per_class={"setosa": 10},
                            per_file={"a.csv": 1, "b.csv": 2, "c.csv": 3, "d.csv": 4})
    page = render_report(stats, job(), 1.0, [])
    assert "b.csv" in page and "c.csv" not in page
    assert "and 2 more files (7 rows)" in page


def test_write_report_replaces_atomically(tmp_path):
    target = tmp_path / "out" / "report.html"
    write_report(target, small_stats(), job(status="Running"), 1.0, [])
    assert "Running" in target.read_text()

    write_report(target, small_stats(), job(), 1.0, [])

    assert "Completed" in target.read_text() and "Running" not in target.read_text()
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]  # no temp file left
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


# ------------------------------------------------------------------------ Chromium

class Node:
    def __init__(self, tag: str, attrs: dict):
        self.tag, self.attrs, self.children = tag, attrs, []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def find_all(self, tag: str | None = None, **attrs) -> list["Node"]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if (tag is None or child.tag == tag) and all(
                        child.attrs.get(k.rstrip("_").replace("_", "-")) == v for k, v in attrs.items()):
                    found.append(child)
                found.extend(child.find_all(tag, **attrs))
        return found

    def find(self, tag: str | None = None, **attrs) -> "Node":
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag or '*'}> with {attrs} in the rendered DOM"
        return found[0]


class DomParser(HTMLParser):
    """Chromium's serialized DOM as a tree (it closes every non-void element)."""
    VOID = {"meta", "link", "br", "img", "input", "hr", "source", "wbr", "area", "base", "col"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Node(tag, dict(attrs)))

    def handle_endtag(self, tag):
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse_dom(markup: str) -> Node:
    parser = DomParser()
    parser.feed(markup)
    parser.close()
    return parser.root


@pytest.fixture
def report_page(tmp_path) -> tuple[Path, PredictionStats]:
    """A report written from a real predictions file, as `invoke --report` writes it."""
    rows = predictions_rows({"iris_a.csv": {"setosa": 40, "versicolor": 10, "virginica": 2},
                             "iris, b.csv": {"setosa": 20, "versicolor": 20, "virginica": 4}})
    stats = summarize_predictions(write_predictions(tmp_path / "predictions.csv", rows))
    assert stats.per_class == {"setosa": 60, "versicolor": 30, "virginica": 6}
    page = write_report(tmp_path / "report.html", stats, job(files_total=3, files_failed=1), 4.0,
                        [("broken.csv", "ValueError: could not convert <b>abc</b> to float")])
    return page, stats


@pytest.mark.slow
def test_chromium_renders_the_counts(report_page, tmp_path):
    chromium = locate_chromium()
    page, stats = report_page

    dom = parse_dom(run_chromium(chromium, tmp_path / "browser", page.as_uri(), "--dump-dom").stdout)

    assert dom.find("span", id="job-name").text() == "batchjob-7f3a"
    assert dom.find("span", id="job-status").text() == "Completed with failures"  # 1 failed file
    value = lambda card: dom.find("div", id=card).find("div", class_="value").text()
    assert value("rows-scored") == "96"
    assert value("rows-per-second") == "24.0"
    assert value("files-failed") == "1"

    bars = dom.find("svg", id="class-chart").find_all("rect", class_="bar")
    assert [(b.attrs["data-label"], int(b.attrs["data-count"])) for b in bars] == \
        list(stats.per_class.items())
    table = [[cell.text() for cell in row.find_all("td")]
             for row in dom.find("table", id="classes").find("tbody").find_all("tr")]
    assert table == [["setosa", "60", "62.5%"], ["versicolor", "30", "31.2%"],
                     ["virginica", "6", "6.2%"]]
    files = [[cell.text() for cell in row.find_all("td")]
             for row in dom.find("table", id="files").find("tbody").find_all("tr")]
    assert files == [["iris_a.csv", "52"], ["iris, b.csv", "44"]]

    failed = dom.find("table", id="failed-files").find("tbody").find_all("tr")
    assert [[c.text() for c in row.find_all("td")] for row in failed] == \
        [["broken.csv", "ValueError: could not convert <b>abc</b> to float"]]
    assert not dom.find_all("b") and not dom.find_all("script")  # shown as text, not markup


@pytest.mark.slow
def test_chromium_draws_bars_in_proportion(report_page, tmp_path):
    chromium = locate_chromium()
    page, stats = report_page
    shot = tmp_path / "report.png"

    run_chromium(chromium, tmp_path / "browser", page.as_uri(), f"--screenshot={shot}",
                 "--window-size=1000,900", "--hide-scrollbars", "--force-device-scale-factor=1")

    pixels = np.asarray(Image.open(shot).convert("RGB"))
    widths = {}
    for index, label in enumerate(stats.per_class):
        colour = bytes.fromhex(report.BAR_COLOURS[index].lstrip("#"))
        painted = (pixels == np.frombuffer(colour, dtype=np.uint8)).all(axis=2)
        painted_rows = painted.sum(axis=1)
        assert (painted_rows > 0).sum() == 22, f"the {label} bar is not 22 px high"
        widths[label] = int(painted_rows.max())
    largest = max(stats.per_class.values())
    for label, count in stats.per_class.items():
        assert abs(widths[label] - round(420 * count / largest)) <= 1, (label, widths)


@pytest.mark.slow
def test_chromium_shows_a_job_with_failed_files_without_a_green_badge(report_page, tmp_path):
    """The job completed, but one of its files failed: the badge says so, in amber."""
    chromium = locate_chromium()
    page, _ = report_page
    shot = tmp_path / "report.png"

    dom = parse_dom(run_chromium(chromium, tmp_path / "browser", page.as_uri(), "--dump-dom").stdout)
    run_chromium(chromium, tmp_path / "shot", page.as_uri(), f"--screenshot={shot}",
                 "--window-size=1000,900", "--hide-scrollbars", "--force-device-scale-factor=1")

    assert dom.find("span", id="job-status").text() == "Completed with failures"
    assert "Completed with failures" in dom.find("title").text()
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    painted = lambda colour: int((pixels == np.frombuffer(bytes.fromhex(colour), np.uint8)).all(axis=2).sum())
    assert painted("2f8f4e") == 0, "a green badge"
    assert painted("b45309") > 200, "no amber badge"


LABELS = ["setosa", "versicolor", "virginica"]


@pytest.fixture
def labelled_report(tmp_path) -> Path:
    """predictions.csv of data/iris_csv.csv (its `species` column) with three rows predicted
    wrong, and the report written beside it, as `invoke --report` writes it."""
    iris = list(csv.DictReader(IRIS_CSV.open()))
    wrong = {0: "versicolor", 60: "virginica", 140: "versicolor"}
    rows = [(i, wrong.get(i, row["species"]), "iris_csv.csv") for i, row in enumerate(iris)]
    out = tmp_path / "out"
    out.mkdir()
    predictions = write_predictions(out / "predictions.csv", rows)
    (tmp_path / "logs").mkdir()
    stats = summarize_predictions(predictions)
    labels = check_labels(predictions, {"iris_csv.csv": IRIS_CSV})
    summary = job(model="iris-classifier:2", input=str(IRIS_CSV), files_total=1,
                  predictions_file=str(predictions), logs_path=str(tmp_path / "logs"))
    return write_report(out / "report.html", stats, summary, 2.0, [], labels=labels)


def test_labels_are_matched_by_file_and_row(tmp_path):
    data = tmp_path / "b.csv"
    data.write_text("sepal_length,species\n1, setosa\n2,virginica\n3,virginica\n")
    unlabelled = tmp_path / "c.csv"
    unlabelled.write_text("sepal_length\n1\n")
    predictions = write_predictions(tmp_path / "p.csv", [
        (2, "virginica", "b.csv"), (0, "setosa", "b.csv"), (1, "setosa", "b.csv"),
        (0, "setosa", "c.csv")])

    check = check_labels(predictions, {"b.csv": data, "c.csv": unlabelled})

    assert (check.rows, check.correct) == (3, 2)
    assert check.per_class == {"setosa": (1, 1), "virginica": (2, 1)}
    assert check_labels(predictions, {"c.csv": unlabelled}).note == "the input has no 'species' column"


@pytest.mark.slow
def test_chromium_shows_the_model_the_accuracy_and_links_to_the_paths(labelled_report, tmp_path):
    chromium = locate_chromium()
    page = labelled_report

    dom = parse_dom(run_chromium(chromium, tmp_path / "browser", page.as_uri(), "--dump-dom").stdout)

    assert dom.find("dd", id="model").text() == "iris-classifier version 2"
    assert dom.find("span", id="job-status").text() == "Completed"
    card = dom.find("div", id="accuracy")
    assert card.find("div", class_="value").text() == "0.980"  # 147 of 150
    assert "147 of 150" in card.text()
    per_class = [[c.text() for c in row.find_all("td")]
                 for row in dom.find("table", id="per-class").find("tbody").find_all("tr")]
    assert per_class == [["setosa", "50", "49", "98.0%"], ["versicolor", "50", "49", "98.0%"],
                         ["virginica", "50", "49", "98.0%"]]
    # Each path is a link that leads to it from where the page is.
    hrefs = {key: dom.find("dd", id=key).find("a").attrs["href"]
             for key in ("predictions", "logs", "input")}
    assert hrefs["predictions"] == "predictions.csv"
    assert (page.parent / hrefs["predictions"]).is_file()
    assert hrefs["logs"] == (tmp_path / "logs").as_uri()
    assert hrefs["input"] == IRIS_CSV.as_uri()


def test_a_report_without_labels_says_why_there_is_no_accuracy(tmp_path):
    page = render_report(small_stats(), job(model="iris-classifier:1"), 1.0, [],
                         labels=LabelCheck("species", note="the input has no 'species' column"))
    assert "No accuracy: the input has no &#x27;species&#x27; column" in page
    assert 'id="accuracy"' not in page


def test_a_failed_job_without_named_files_does_not_say_none_failed():
    page = render_report(PredictionStats(rows=0), job(status="Failed", error="boom"), 1.0, [])
    assert "No failed files" not in page and 'id="failed-unnamed"' in page
    assert 'class="status failed"' in page


# ------------------------------------------------------------------------ ensure-chromium.sh

def test_missing_chromium_fails_the_browser_tests(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("SKIP_BROWSER_TESTS", raising=False)
    with pytest.raises(pytest.fail.Exception, match="run scripts/ensure-chromium.sh"):
        locate_chromium()
    monkeypatch.setenv("SKIP_BROWSER_TESTS", "1")
    with pytest.raises(pytest.skip.Exception):
        locate_chromium()


def test_ensure_chromium_is_quiet_when_installed():
    locate_chromium()  # otherwise the script would install it
    done = subprocess.run([str(ENSURE_CHROMIUM)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_ensure_chromium_says_why_it_cannot_install(tmp_path):
    # No chromium and no apt-get on PATH: nothing to install with.
    done = subprocess.run([shutil.which("bash"), str(ENSURE_CHROMIUM)], capture_output=True,
                          text=True, timeout=60, env={"PATH": str(tmp_path)})
    assert done.returncode == 1
    assert "no apt-get" in done.stderr and "SKIP_BROWSER_TESTS=1" in done.stderr
