"""What a batch scoring job predicted: per-class and per-file counts read from
`predictions.csv`, a plain-text class summary for the terminal, and a self-contained HTML
report (`invoke --report`).

`predictions.csv` is Azure ML's append_row output: no header, one line per input row,
`row,prediction,file_name`, values quoted by the writer when they hold a comma or a quote.
It can hold millions of rows, so it is read in record batches and counted with Arrow
compute; only the distinct labels and file names become Python objects.
"""
from __future__ import annotations

import csv
import html
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from deployer.entities import JobSummary

PREDICTION_COLUMNS = ["row", "prediction", "file_name"]
READ_BLOCK_BYTES = 4 << 20
# Past this many input files the report lists the first ones only; the totals stay exact.
MAX_FILES_LISTED = 1000
BAR_COLOURS = ["#3b6fd4", "#e07b39", "#3a9d5d", "#c94c6a", "#8a63c9", "#2b9fa8", "#b5972f", "#6b7280"]


class ReportError(Exception):
    """The predictions file is missing or is not in the append_row format."""


@dataclass(frozen=True)
class PredictionStats:
    rows: int
    per_class: dict[str, int] = field(default_factory=dict)  # label -> rows, by label
    per_file: dict[str, int] = field(default_factory=dict)  # file -> rows, in input order

    def share(self, label: str) -> float:
        return self.per_class.get(label, 0) / self.rows if self.rows else 0.0


def _add_value_counts(totals: Counter, column) -> None:
    import pyarrow.compute as pc

    counted = pc.value_counts(column)
    for value, count in zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist()):
        totals[value] += count


def summarize_predictions(predictions_csv: Path) -> PredictionStats:
    """Count the rows of a predictions file per class and per input file."""
    import pyarrow as pa
    from pyarrow import csv as pa_csv

    path = Path(predictions_csv)
    if not path.is_file():
        raise ReportError(f"No predictions file at {path}.")
    if path.stat().st_size == 0:  # a job whose every file failed writes an empty file
        return PredictionStats(rows=0)
    read_options = pa_csv.ReadOptions(column_names=PREDICTION_COLUMNS,
                                      autogenerate_column_names=False,
                                      block_size=READ_BLOCK_BYTES)
    # Quoted values may hold newlines too (the writer quotes them like commas).
    parse_options = pa_csv.ParseOptions(newlines_in_values=True)
    # `row` is parsed as an integer so that a file with a header line, or with its columns
    # in another order, is refused instead of being counted as predictions.
    convert_options = pa_csv.ConvertOptions(
        column_types={"row": pa.int64(), "prediction": pa.string(), "file_name": pa.string()},
        strings_can_be_null=False, quoted_strings_can_be_null=False)
    rows = 0
    per_class: Counter = Counter()
    per_file: Counter = Counter()  # insertion order = first appearance = input order
    try:
        with pa_csv.open_csv(path, read_options=read_options, parse_options=parse_options,
                             convert_options=convert_options) as reader:
            for batch in reader:
                rows += batch.num_rows
                _add_value_counts(per_class, batch.column("prediction"))
                _add_value_counts(per_file, batch.column("file_name"))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ReportError(f"{path} is not a predictions file (headerless "
                          f"{','.join(PREDICTION_COLUMNS)}): {first_line}") from exc
    return PredictionStats(rows=rows, per_class=dict(sorted(per_class.items())),
                           per_file=dict(per_file))


def failed_files_of(summary: JobSummary) -> list[tuple[str, str]]:
    """The job's failed files as (file, reason) pairs, from `JobSummary.failed_files`."""
    pairs = []
    for item in summary.failed_files or []:
        if isinstance(item, dict):
            pairs.append((str(item.get("file", "")), str(item.get("message", ""))))
        else:
            file_name, reason = item
            pairs.append((str(file_name), str(reason)))
    return pairs


# The trainer's default label column (trainer/main.py --label-column): an input that has it
# is scored against it in the report.
DEFAULT_LABEL_COLUMN = "species"


@dataclass(frozen=True)
class LabelCheck:
    """Predictions compared with the input's label column, row by row (matched by file
    name and row number): per true class, its rows and how many were predicted right."""

    column: str
    rows: int = 0
    correct: int = 0
    per_class: dict[str, tuple[int, int]] = field(default_factory=dict)  # label -> (rows, right)
    note: str = ""  # why there is no accuracy (no label column, input not readable), else ""

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.rows if self.rows else None


def _input_labels(path: Path, column: str):
    """The label column of one input file as an array of strings, None without one."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyarrow import csv as pa_csv

    if path.suffix.lower() in (".parquet", ".pqt"):
        import pyarrow.parquet as pq

        if column not in pq.read_schema(path).names:
            return None
        values = pq.read_table(path, columns=[column]).column(column)
    else:
        with path.open("r", encoding="utf-8", errors="replace", newline="") as handle:
            header = next(csv.reader(handle), [])
        if column not in [name.strip() for name in header]:
            return None
        values = pa_csv.read_csv(path, read_options=pa_csv.ReadOptions(block_size=READ_BLOCK_BYTES),
                                 convert_options=pa_csv.ConvertOptions(
                                     include_columns=[column],
                                     column_types={column: pa.string()})).column(column)
    return pc.utf8_trim_whitespace(values.cast(pa.string())).to_numpy(zero_copy_only=False)


def check_labels(predictions_csv: Path, inputs: dict[str, Path],
                 column: str = DEFAULT_LABEL_COLUMN) -> LabelCheck:
    """Compare each prediction with the label of its input row (`inputs`: file name as the
    predictions file names it → a local copy). Files without the column are not counted;
    when none has it, `note` says so."""
    import numpy as np
    import pyarrow as pa
    from pyarrow import csv as pa_csv

    labels = {}
    for name, path in inputs.items():
        found = _input_labels(Path(path), column)
        if found is not None:
            labels[name] = found
    if not labels:
        return LabelCheck(column, note=f"the input has no '{column}' column")
    table = pa_csv.read_csv(
        predictions_csv, read_options=pa_csv.ReadOptions(column_names=PREDICTION_COLUMNS,
                                                         block_size=READ_BLOCK_BYTES),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(column_types={
            "row": pa.int64(), "prediction": pa.string(), "file_name": pa.string()}))
    rows = table.column("row").to_numpy()
    predicted = table.column("prediction").to_numpy(zero_copy_only=False)
    files = table.column("file_name").to_numpy(zero_copy_only=False)
    truth_all, right_all = [], []
    for name, truth in labels.items():
        mine = files == name
        at = rows[mine]
        known = (at >= 0) & (at < len(truth))
        truth_here = truth[at[known]]
        truth_all.append(truth_here)
        right_all.append(truth_here == predicted[mine][known])
    truth = np.concatenate(truth_all) if truth_all else np.array([], dtype=object)
    right = np.concatenate(right_all) if right_all else np.array([], dtype=bool)
    per_class = {str(label): (int((truth == label).sum()), int(right[truth == label].sum()))
                 for label in sorted(set(truth.tolist()))}
    return LabelCheck(column, rows=int(len(truth)), correct=int(right.sum()), per_class=per_class)


def _label(label: str) -> str:
    return label if label != "" else "(empty)"


def _rows_per_second(rows: int, elapsed_s: float) -> float | None:
    return rows / elapsed_s if elapsed_s and elapsed_s > 0 else None


def class_summary_rows(stats: PredictionStats) -> list[tuple[str, str, str]]:
    """(class, rows, share) cells for a terminal table, with a closing total line."""
    if not stats.rows:
        return []
    lines = [(_label(label), f"{count:,}", f"{stats.share(label):.1%}")
             for label, count in stats.per_class.items()]
    lines.append(("total", f"{stats.rows:,}", "100.0%"))
    return lines


def format_class_summary(stats: PredictionStats) -> list[str]:
    """The per-class summary as aligned plain-text lines."""
    if not stats.rows:
        return ["No rows were scored."]
    table = [("class", "rows", "share"), *class_summary_rows(stats)]
    widths = [max(len(line[i]) for line in table) for i in range(3)]
    return [f"{name:<{widths[0]}}  {count:>{widths[1]}}  {share:>{widths[2]}}".rstrip()
            for name, count, share in table]


_STYLE = """
body{font-family:"DejaVu Sans","Liberation Sans",Arial,sans-serif;margin:24px 32px;color:#1f2933;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub{color:#52606d;margin:0 0 16px}
.status{display:inline-block;padding:2px 10px;border-radius:10px;font-size:13px;font-weight:bold;color:#fff;background:#6b7280}
.status.completed{background:#2f8f4e}.status.failed{background:#c0392b}.status.canceled{background:#9a6b00}
.status.partial{background:#b45309}
a{color:#1d4ed8}
dl.job{display:grid;grid-template-columns:max-content auto;gap:4px 16px;margin:0}
dl.job dt{color:#52606d}dl.job dd{margin:0;word-break:break-all}
.cards{display:flex;gap:12px;margin:18px 0 0;flex-wrap:wrap}
.card{border:1px solid #d9e2ec;border-radius:6px;padding:10px 16px;min-width:120px}
.card .value{font-size:22px;font-weight:bold}.card .name{color:#52606d;font-size:13px}
table{border-collapse:collapse;font-size:14px}
th,td{border-bottom:1px solid #e4e7eb;padding:4px 12px;text-align:left}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.error{color:#c0392b}.none{color:#52606d;font-style:italic}
"""


def _bar_chart(stats: PredictionStats) -> str:
    """Horizontal bars, one per class, widths proportional to the class's rows."""
    label_width, bar_area, bar_height, gap = 150, 420, 22, 10
    width = label_width + bar_area + 130
    height = gap + len(stats.per_class) * (bar_height + gap)
    largest = max(stats.per_class.values())
    parts = [f'<svg id="class-chart" role="img" aria-label="Rows per predicted class" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    for index, (label, count) in enumerate(stats.per_class.items()):
        y = gap + index * (bar_height + gap)
        bar_width = max(2, round(bar_area * count / largest))  # a small class stays visible
        colour = BAR_COLOURS[index % len(BAR_COLOURS)]
        text = html.escape(_label(label))
        share = f"{stats.share(label):.1%}"
        parts.append(
            f'<g><title>{text}: {count:,} rows ({share})</title>'
            f'<text x="{label_width - 8}" y="{y + bar_height - 6}" text-anchor="end" '
            f'font-size="13" fill="#1f2933">{text}</text>'
            f'<rect class="bar" data-label="{text}" data-count="{count}" x="{label_width}" y="{y}" '
            f'width="{bar_width}" height="{bar_height}" fill="{colour}" shape-rendering="crispEdges"/>'
            f'<text x="{label_width + bar_width + 6}" y="{y + bar_height - 6}" font-size="13" '
            f'fill="#1f2933">{count:,} ({share})</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def model_text(model: str) -> str:
    """'iris-classifier:3' → 'iris-classifier version 3'."""
    name, _, version = model.rpartition(":")
    return f"{name} version {version}" if name and version else model


def badge(summary: JobSummary) -> tuple[str, str]:
    """(text, css class) of the job's state: a job that completed with failed files is
    "Completed with failures", never shown like one that scored every file."""
    status = summary.status or "Unknown"
    if status == "Completed" and (summary.files_failed or summary.failed_files):
        return "Completed with failures", "partial"
    return status, status.lower()


def _href(path: str, folder: Path | None) -> str | None:
    """A link to a local path: relative when it is in the report's folder, a file: URI
    otherwise; None for what a browser cannot open (azureml://, datastore paths)."""
    if not path or folder is None or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", path):
        return None
    target = Path(path).absolute()
    try:
        return Path(os.path.relpath(target, Path(folder).absolute())).as_posix() \
            if target.is_relative_to(Path(folder).absolute()) else target.as_uri()
    except ValueError:
        return None


def render_report(stats: PredictionStats, summary: JobSummary, elapsed_s: float,
                  failed_files: list[tuple[str, str]], *, labels: LabelCheck | None = None,
                  folder: Path | None = None) -> str:
    """One self-contained HTML page: inline CSS and SVG, no script, nothing fetched. Local
    paths (predictions, logs, input) are links when `folder`, where the page is, is given."""
    e = html.escape
    rate = _rows_per_second(stats.rows, elapsed_s)
    status, status_class = badge(summary)
    job_fields = [("Model", "model", model_text(summary.model)), ("Endpoint", "", summary.endpoint),
                  ("Deployment", "", summary.deployment), ("Input", "input", summary.input),
                  ("Created", "", summary.created), ("Finished", "", summary.finished),
                  ("Predictions", "predictions", summary.predictions_at),
                  ("Logs", "logs", summary.logs_path)]

    def cell(key: str, value: str) -> str:
        href = _href(value, folder) if key in ("input", "predictions", "logs") else None
        ident = f' id="{key}"' if key else ""
        if href is None:
            return f"<dd{ident}>{e(value)}</dd>"
        return f'<dd{ident}><a href="{e(href)}">{e(value)}</a></dd>'

    job_rows = "".join(f"<dt>{e(name)}</dt>{cell(key, str(value))}"
                       for name, key, value in job_fields if value)
    error = f'<p class="error" id="job-error">{e(summary.error)}</p>' if summary.error else ""
    files_total = summary.files_total if summary.files_total is not None else len(stats.per_file)
    # A backend may know how many files failed without naming them.
    files_failed = max(summary.files_failed or 0, len(failed_files))
    accuracy = labels.accuracy if labels is not None else None
    cards = [("rows-scored", f"{stats.rows:,}", "rows scored"),
             ("rows-per-second", f"{rate:,.1f}" if rate is not None else "n/a", "rows/s"),
             ("elapsed", f"{elapsed_s:,.1f} s" if elapsed_s else "n/a", "elapsed"),
             ("files", f"{files_total:,}", "input files"),
             ("files-failed", f"{files_failed:,}", "failed files")]
    if accuracy is not None:
        cards.insert(0, ("accuracy", f"{accuracy:.3f}", f"accuracy ({labels.correct:,} of "
                                                        f"{labels.rows:,} rows)"))
    cards_html = "".join(f'<div class="card" id="{key}"><div class="value">{e(value)}</div>'
                         f'<div class="name">{e(name)}</div></div>' for key, value, name in cards)
    labels_html = _labels_html(labels) if labels is not None else ""

    if stats.rows:
        class_rows = "".join(
            f'<tr><td>{e(_label(label))}</td><td class="num">{count:,}</td>'
            f'<td class="num">{stats.share(label):.1%}</td></tr>'
            for label, count in stats.per_class.items())
        classes_html = (
            _bar_chart(stats)
            + '<table id="classes"><thead><tr><th>class</th><th class="num">rows</th>'
              '<th class="num">share</th></tr></thead><tbody>' + class_rows + "</tbody>"
            + f'<tfoot><tr><th>total</th><th class="num">{stats.rows:,}</th>'
              '<th class="num">100.0%</th></tr></tfoot></table>')
    else:
        classes_html = '<p class="none" id="no-rows">No rows were scored.</p>'

    if failed_files:
        failed_rows = "".join(f"<tr><td>{e(name)}</td><td>{e(reason)}</td></tr>"
                              for name, reason in failed_files)
        failed_html = ('<table id="failed-files"><thead><tr><th>file</th><th>reason</th></tr>'
                       "</thead><tbody>" + failed_rows + "</tbody></table>")
    elif files_failed:
        failed_html = (f'<p class="error" id="failed-unnamed">{files_failed:,} '
                       f'file{"" if files_failed == 1 else "s"} failed; '
                       "the job's logs name them.</p>")
    elif summary.status in ("Failed", "Canceled"):
        failed_html = ('<p class="error" id="failed-unnamed">The job named no failed files; '
                       "its error and logs say why it ended.</p>")
    else:
        failed_html = '<p class="none" id="no-failed-files">No failed files.</p>'

    if stats.per_file:
        listed = list(stats.per_file.items())[:MAX_FILES_LISTED]
        file_rows = "".join(f'<tr><td>{e(name)}</td><td class="num">{count:,}</td></tr>'
                            for name, count in listed)
        more = len(stats.per_file) - len(listed)
        more_html = (f'<p class="none">… and {more:,} more files '
                     f'({sum(list(stats.per_file.values())[MAX_FILES_LISTED:]):,} rows).</p>'
                     if more else "")
        files_html = ('<table id="files"><thead><tr><th>file</th><th class="num">rows</th></tr>'
                      "</thead><tbody>" + file_rows + "</tbody></table>" + more_html)
    else:
        files_html = '<p class="none" id="no-files">No file produced predictions.</p>'

    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        # Enforces what the page promises: nothing is loaded, nothing runs.
        "<meta http-equiv=\"Content-Security-Policy\" "
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>Batch job {e(summary.name)}: {e(status)}</title>"
        f"<style>{_STYLE}</style></head><body>"
        f'<h1>Batch job <span id="job-name">{e(summary.name)}</span> '
        f'<span class="status {e(status_class)}" id="job-status">{e(status)}</span></h1>'
        f'<p class="sub">{e(summary.endpoint)} / {e(summary.deployment)}'
        + (f" · {e(model_text(summary.model))}" if summary.model else "") + "</p>"
        f'<dl class="job">{job_rows}</dl>{error}'
        f'<div class="cards">{cards_html}</div>'
        f"<h2>Predicted classes</h2>{classes_html}{labels_html}"
        f"<h2>Failed files</h2>{failed_html}"
        f"<h2>Rows per file</h2>{files_html}"
        "</body></html>\n")


def _labels_html(labels: LabelCheck) -> str:
    """The predictions against the input's label column, per true class."""
    e = html.escape
    if labels.accuracy is None:
        return (f'<h2>Accuracy</h2><p class="none" id="no-accuracy">No accuracy: '
                f"{e(labels.note or 'no labelled row was scored')}.</p>")
    rows = "".join(f'<tr><td>{e(_label(label))}</td><td class="num">{count:,}</td>'
                   f'<td class="num">{right:,}</td><td class="num">{right / count:.1%}</td></tr>'
                   for label, (count, right) in labels.per_class.items())
    return (f"<h2>Accuracy against the input's <code>{e(labels.column)}</code> column</h2>"
            '<table id="per-class"><thead><tr><th>true class</th><th class="num">rows</th>'
            '<th class="num">predicted right</th><th class="num">recall</th></tr></thead>'
            f"<tbody>{rows}</tbody><tfoot><tr><th>total</th>"
            f'<th class="num">{labels.rows:,}</th><th class="num">{labels.correct:,}</th>'
            f'<th class="num">{labels.accuracy:.1%}</th></tr></tfoot></table>')


def write_report(path: Path, stats: PredictionStats, summary: JobSummary, elapsed_s: float,
                 failed_files: list[tuple[str, str]], *, labels: LabelCheck | None = None) -> Path:
    """Write the report atomically: a reader sees the previous report or the new one. Its
    local paths are linked from where it is."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    page = render_report(stats, summary, elapsed_s, failed_files, labels=labels,
                         folder=path.parent)
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent,
                                         prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(page)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, 0o644)  # NamedTemporaryFile creates 0600
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return path
