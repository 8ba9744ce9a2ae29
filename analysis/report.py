"""`hxt report`: report.md, a self-contained report.html and the PNG figures, from the store alone.

The report is a list of blocks (headings, prose, tables, figures) rendered twice: as Markdown that
links the PNGs in `figures/`, and as HTML with the same PNGs embedded as base64 data URIs, so the
HTML file needs nothing beside it.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis import plots
from analysis.fits import N_BOOT
from analysis.load import load_store
from analysis.metrics import HORIZON_THRESHOLD
from analysis.tables import (
    Analysis,
    analyse,
    header_table,
    heatmap_table,
    problems_table,
    scaling_table,
    solve_table,
    summary_table,
    verdict_overview_table,
    verdict_table,
)
from analysis.verdict import MIN_SEEDS, TIE_BAND
from sweeps.files import check_writable_dir

FIGURES = "figures"


@dataclass(frozen=True)
class Heading:
    text: str
    level: int


@dataclass(frozen=True)
class Prose:
    text: str  # Markdown subset: paragraphs, `code`, **bold**, "- " bullet lines


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame


@dataclass(frozen=True)
class Figure:
    path: Path
    caption: str


Block = Heading | Prose | Table | Figure


def write_report(sweep_dir: Path | str, out: Path | str | None = None, n_boot: int = N_BOOT) -> list[Path]:
    """Write report.md, report.html and figures/*.png; return the written paths (report files first)."""
    store = load_store(sweep_dir)
    out = Path(out) if out is not None else store.path.parent / "report"
    check_writable_dir(out, "--out")
    out.mkdir(parents=True, exist_ok=True)
    analysis = analyse(store, n_boot=n_boot)
    blocks = build_blocks(analysis, out / FIGURES)
    markdown_path, html_path = out / "report.md", out / "report.html"
    markdown_path.write_text(render_markdown(blocks, out), encoding="utf-8")
    title = f"hxt report: {store.sweep.get('name', store.path.parent.name)}"
    html_path.write_text(render_html(blocks, title), encoding="utf-8")
    figures = [block.path for block in blocks if isinstance(block, Figure)]
    return [markdown_path, html_path, *figures]


def build_blocks(analysis: Analysis, figure_dir: Path) -> list[Block]:
    store = analysis.store
    colours = plots.arch_colours(store.runs["arch"])
    name = store.sweep.get("name", store.path.parent.name)
    blocks: list[Block] = [
        Heading(f"hxt report: {name}", 1),
        Table(header_table(analysis)),
    ]
    unfinished = store.status_counts["pending"] + store.status_counts["running"]
    if unfinished:
        blocks.append(
            Prose(
                f"**The sweep is not finished**: {unfinished} runs are pending or running; cells may change."
            )
        )
    blocks += [
        Prose(
            "**How to read this report.** Each (task, architecture, size, seed) is represented by the "
            "learning rate that did best *in range* (scaled accuracy on evaluation bins inside the "
            "training range); out-of-range results never choose the learning rate. **Scaled accuracy** "
            "is `(acc - chance) / (1 - chance)`: 0 is chance, 1 is perfect. **Out of range** means "
            "evaluation bins beyond the training difficulty (longer inputs, more swaps): the "
            "generalisation test and the headline. Numbers are means over seeds unless stated."
        ),
        Heading("Overview: scaled accuracy, task × architecture", 2),
        Prose(
            "Each cell is the seed-mean scaled accuracy at the task's largest size; left in range, "
            "right out of range. White is chance, blue is above chance (dark blue solved), red is "
            "below chance, grey is missing. A model that is blue on the left but white on the right "
            "has learned the training range without the underlying algorithm."
        ),
        Figure(
            plots.heatmap(analysis.summary, figure_dir / "heatmap.png"),
            "Scaled accuracy, task × architecture",
        ),
        Prose("Out-of-range scaled accuracy behind the right panel:"),
        Table(heatmap_table(analysis)),
        Heading("Hybrid verdict", 2),
    ]
    if analysis.verdicts.empty:
        blocks.append(
            Prose("No hybrid architecture (a pattern with two or more mixer letters) is in this sweep.")
        )
    else:
        blocks += [
            Prose(
                "Does each hybrid beat the best of its parts at the same target size? Its parts are "
                "the single-mixer patterns of its letters (same negative-eigenvalue setting) and the "
                "transformer `A`. The **gap** is the hybrid's seed-mean scaled accuracy minus the best "
                "part's, with a 95 % bootstrap CI over seeds (each arm resampled; the best part "
                "re-chosen in each replicate). The headline verdict is out of range:\n"
                f"- `hybrid exceeds parts`: the CI lies above 0 (and not wholly inside ±{TIE_BAND});\n"
                f"- `ties`: the whole CI lies within ±{TIE_BAND} scaled accuracy;\n"
                "- `a part wins`: the CI lies below 0;\n"
                "- `inconclusive`: the CI spans 0 with a possibly larger effect, or a part did not run;\n"
                f"- `too few seeds`: an arm has fewer than {MIN_SEEDS} finished seeds; the point gap is "
                "shown without a CI (outcomes are often bimodal over seeds, so one or two seeds can "
                "mislead either way);\n"
                "- `pending`: the hybrid or a part has no finished run at this size yet, but runs to come.\n"
                "**Smaller size to solve** compares the size at which out-of-range token accuracy "
                f"reaches {HORIZON_THRESHOLD} (logistic fits over sizes): `yes` when the hybrid's CI lies "
                "wholly below the best part's, `no` when wholly above, `unclear` when they overlap, "
                "`n/a` without fits (one size)."
            ),
            Prose("At each task's largest size (out-of-range verdict, gap in scaled accuracy):"),
            Table(verdict_overview_table(analysis)),
            Prose("Every size, with CIs:"),
            Table(verdict_table(analysis)),
        ]
    for task in analysis.tasks:
        blocks += task_blocks(analysis, task, colours, figure_dir)
    problems = problems_table(analysis)
    blocks.append(Heading("Failed and diverged runs", 2))
    if problems.empty:
        blocks.append(Prose("None."))
    else:
        blocks += [
            Prose(
                "These runs are left out of every number above "
                "(a cell whose learning rates all failed is missing)."
            ),
            Table(problems),
        ]
    blocks += [Heading("Method", 2), Prose(METHOD)]
    return blocks


def task_blocks(analysis: Analysis, task: str, colours: dict, figure_dir: Path) -> list[Block]:
    slug = _slug(task)
    blocks: list[Block] = [
        Heading(f"Task: {task}", 2),
        Prose(
            "Per architecture and size. *token* is per-token accuracy on supervised positions, *seq* "
            "the fraction of examples with every supervised position right, *scaled* is chance-centred. "
            f"*learned* counts the seeds whose in-range token accuracy reaches {HORIZON_THRESHOLD}. "
            "*steps* is the median over seeds of the optimiser steps trained, of the planned budget, "
            "and how many seeds stopped early on the in-range fit (beyond the range a run stopped "
            "early may not have finished improving). Beside the seed mean, *best seed* is the best "
            "seed's out-of-range scaled accuracy (what published protocols report). The Wilson "
            "interval covers the evaluation sample only; the "
            "seed range shows seed-to-seed spread. The horizon is the largest bin of a knob with token "
            f"accuracy ≥ {HORIZON_THRESHOLD} (— when none). *moved* columns (where present) count only "
            "examples whose queried variable changed address, where reading the initial address is no "
            "shortcut."
        ),
        Table(summary_table(analysis, task)),
        Heading("Training curves", 3),
        *_training_blocks(analysis, task, colours, figure_dir / f"training_{slug}.png"),
        Heading("Accuracy vs difficulty", 3),
        Prose(
            "Token accuracy per evaluation bin at the largest size, mean over seeds, with a pooled "
            "95 % Wilson band. The grey span is the training range; the dotted line is chance; the "
            f"dashed line is the horizon threshold {HORIZON_THRESHOLD}. Curves that stay high right of "
            "the grey span generalise."
        ),
        Figure(
            plots.generalisation(analysis.curves, task, colours, figure_dir / f"generalisation_{slug}.png"),
            f"{task}: accuracy vs difficulty",
        ),
        Heading("Size to solve", 3),
    ]
    for note in analysis.notes.get(task, []):
        blocks.append(Prose(f"Note: {note}."))
    blocks += _fit_blocks(
        analysis, task, colours, figure_dir / f"solve_{slug}.png", "size to solve", analysis.solve_fits,
        plots.size_to_solve, solve_table,
    )  # fmt: skip
    blocks.append(Heading("Loss scaling", 3))
    blocks += _fit_blocks(
        analysis, task, colours, figure_dir / f"scaling_{slug}.png", "loss scaling", analysis.power_fits,
        plots.scaling, scaling_table,
    )  # fmt: skip
    return blocks


def _training_blocks(analysis: Analysis, task: str, colours: dict, path: Path) -> list[Block]:
    if not (analysis.training["task_label"] == task).any():
        return [Prose("Skipped: the store holds no training metrics for this task's runs.")]
    return [
        Prose(
            f"Training loss (log axis, floored at {plots.LOSS_FLOOR:g}) and training accuracy against "
            "step at the largest size, a panel per architecture and a line per seed at its chosen "
            "learning rate: a seed that left a plateau drops in loss and rises in accuracy at that step, "
            "flat lines never did, and lines that end early stopped early. The legend gives each seed's "
            f"in-range evaluation token accuracy, which counts it as learned at ≥ {HORIZON_THRESHOLD}; "
            f"the dotted line is chance, the dashed {HORIZON_THRESHOLD}."
        ),
        Figure(plots.training(analysis.training, task, colours, path), f"{task}: training curves per seed"),
    ]


# Per kind of fit: what it needs, and what its figure and table show.
_FIT_TEXT = {
    "size to solve": (
        "two or more sizes",
        "Token accuracy against non-embedding parameters (log axis), one point per seed, with "
        "a logistic rising from chance to 1 and its 95 % bootstrap band over seeds. The table "
        f"gives the size where the fit reaches {HORIZON_THRESHOLD}; when every size (or none) "
        "reaches it the size lies outside the range tried and only the bound is printed. The "
        "last rows use the state the model carries at the evaluation length instead of "
        "parameters (recurrent state, or the KV cache for attention), in elements: the memory "
        "an architecture needs to generalise.",
    ),
    "loss scaling": (
        "three or more sizes",
        "In-range evaluation loss against parameters (log-log), one point per seed, with "
        "`L(N) = E + A/N^α` fitted in log space (Huber loss, multi-start L-BFGS) and its 95 % "
        "bootstrap band. α is how fast loss falls with size; E is the loss no size removes.",
    ),
}


def _fit_blocks(
    analysis: Analysis, task: str, colours: dict, path: Path, kind: str, fits: dict, plot, table
) -> list[Block]:
    """The body of a fit's section: what it shows, its figure (`plot`, saved at `path`) and its
    `table`, or why `task` has no fit of this `kind`."""
    needs, prose = _FIT_TEXT[kind]
    if not any(key[0] == task for key in fits):
        return [Prose(f"Skipped: the {kind.replace(' ', '-')} fit needs runs at {needs}.")]
    figure = Figure(plot(analysis.best, fits, task, colours, path), f"{task}: {kind}")
    return [Prose(prose), figure, Table(table(analysis, task))]


METHOD = (
    "- **Learning rate**: chosen per (task, architecture, size, seed) by in-range scaled accuracy "
    "(ties: lower in-range loss, then the smaller rate).\n"
    "- **Pooling**: a run's in-range (out-of-range) accuracy pools all evaluation bins inside (outside) "
    "the training range, token accuracy weighted by supervised tokens, sequence accuracy by examples; "
    "tasks binned along several knobs pool the bins of every knob.\n"
    f"- **Horizon**: along each knob, the largest bin value with token accuracy ≥ {HORIZON_THRESHOLD}; "
    "per cell, the lower median over seeds (a seed with no such bin counts as below every bin).\n"
    f"- **Learned**: a seed has learned when its in-range token accuracy (at its chosen learning rate) "
    f"reaches {HORIZON_THRESHOLD}; a cell shows `k/n`, k of its n seeds learned. Outcomes are often "
    "bimodal over seeds, which a mean hides.\n"
    "- **Best seed**: the largest out-of-range scaled accuracy over a cell's seeds (each at its chosen "
    "learning rate), as published protocols report (the best of their seeds), beside our seed mean. "
    "The seed range is kept: its upper end is the best seed, its lower end the worst.\n"
    "- **Wilson interval**: 95 % score interval of the token accuracy pooled over seeds.\n"
    f"- **Size to solve**: `acc = c + (1 - c)·sigmoid(k·(log10 N - x0))` fitted by least squares "
    f"to every seed's token accuracy; the size to solve is where it reaches {HORIZON_THRESHOLD}. "
    f"CIs: {N_BOOT} bootstrap replicates resampling seeds within each size (none with one seed per size).\n"
    "- **Loss scaling**: `L(N) = E + A/N^α` on in-range evaluation loss, Huber loss (δ = 0.01) on "
    "log-loss residuals; 45 initialisations on a grid over (E, A, α) are all refined by a vectorised "
    "Levenberg-Marquardt and the best three polished by L-BFGS-B; "
    f"{N_BOOT} bootstrap replicates as above, each refitted from the point estimate.\n"
    f"- **Verdict**: see the verdict section; tie band ±{TIE_BAND} scaled accuracy, at least "
    f"{MIN_SEEDS} seeds per arm.\n"
    "- Failed and diverged runs are excluded; the report reads the store only and never trains."
)


def render_markdown(blocks: list[Block], out: Path) -> str:
    render = {
        Heading: lambda block: f"{'#' * block.level} {block.text}",
        Prose: lambda block: block.text,
        Table: lambda block: markdown_table(block.frame),
        Figure: lambda block: f"![{block.caption}]({block.path.relative_to(out).as_posix()})",
    }
    return "\n\n".join(render[type(block)](block) for block in blocks) + "\n"


def markdown_table(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def render_html(blocks: list[Block], title: str) -> str:
    """The page with its head on one line and one line per section (a heading of level 1 or 2 and
    the blocks under it): the fixed parts of the page then make no runs of lines that every
    committed report repeats, and two versions of a report differ section by section."""
    render = {
        Heading: lambda block: f"<h{block.level}>{html.escape(block.text)}</h{block.level}>",
        Prose: lambda block: _prose_html(block.text),
        Table: lambda block: html_table(block.frame),
        Figure: _figure_html,
    }
    sections: list[list[str]] = []
    for block in blocks:
        if not sections or (isinstance(block, Heading) and block.level <= 2):
            sections.append([])
        sections[-1].append(render[type(block)](block))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join("".join(section) for section in sections)
        + "\n</body></html>\n"
    )


def _figure_html(figure: Figure) -> str:
    """The PNG embedded as a data URI."""
    data = base64.b64encode(figure.path.read_bytes()).decode("ascii")
    caption = html.escape(figure.caption)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td{_verdict_class(v)}>{html.escape(str(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


CSS = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1200px;margin:2em auto;"
    "padding:0 1em;color:#222;line-height:1.45}"
    "h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #bbb}"
    "table{border-collapse:collapse;font-size:0.85em;margin:0.8em 0}"
    "th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;white-space:nowrap}"
    "th{background:#f0f0f0}tbody tr:nth-child(even){background:#fafafa}"
    ".scroll{overflow-x:auto}code{background:#f3f3f3;padding:0 3px}"
    "figure{margin:1em 0}img{max-width:100%}figcaption{font-size:0.85em;color:#555}"
    ".exceeds{background:#d8ecd8}.partwins{background:#f6dada}.ties{background:#eeeeee}"
    ".inconclusive{background:#fff6d6}"
)

_VERDICT_CLASSES = {
    "hybrid exceeds parts": "exceeds",
    "a part wins": "partwins",
    "ties": "ties",
    "inconclusive": "inconclusive",
    "too few seeds": "inconclusive",
    "pending": "inconclusive",
}


def _verdict_class(value) -> str:
    """Colour verdict cells, including the overview's `word (+gap)` cells."""
    text = str(value)
    for word, name in _VERDICT_CLASSES.items():
        if text == word or text.startswith(f"{word} ("):
            return f' class="{name}"'
    return ""


def _prose_html(text: str) -> str:
    paragraphs, bullets = [], []
    for line in text.split("\n"):
        if line.startswith("- "):
            bullets.append(f"<li>{_inline_html(line[2:])}</li>")
        else:
            if bullets:
                paragraphs.append("<ul>" + "".join(bullets) + "</ul>")
                bullets = []
            paragraphs.append(f"<p>{_inline_html(line)}</p>")
    if bullets:
        paragraphs.append("<ul>" + "".join(bullets) + "</ul>")
    return "".join(paragraphs)


def _inline_html(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", text)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
