import base64
import html
import sqlite3
import subprocess
import sys
from html.parser import HTMLParser

import pandas as pd
import pytest

from analysis import plots
from analysis.load import load_store
from analysis.report import write_report
from analysis.tables import analyse, heatmap_table, summary_table, verdict_overview_table, verdict_table
from sweeps.cli import main
from tests.analysis.synthetic_store import SCHEMA, build_store


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in {"img", "meta", "br"}:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> after {self.stack[-3:]}"
        self.stack.pop()


def _markdown_tables(text: str) -> list[pd.DataFrame]:
    tables, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
        elif block:
            cells = [[c.strip() for c in row.strip().strip("|").split(" | ")] for row in block]
            tables.append(pd.DataFrame(cells[2:], columns=cells[0]))
            block = []
    return tables


def _find(tables: list[pd.DataFrame], columns) -> pd.DataFrame:
    (table,) = [t for t in tables if list(t.columns) == list(columns)]
    return table


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo shape with 3 seeds: 1 size, 1 LR, parity and state_based_recall, A / G / M / GGGA."""
    sweep = build_store(tmp_path_factory.mktemp("demo") / "sweep", seeds=(0, 1, 2))
    main(["report", str(sweep)])
    return sweep


def test_report_writes_markdown_html_and_figures(demo, capsys):
    out = demo / "report"
    names = sorted(p.name for p in (out / "figures").iterdir())
    assert names == [
        "generalisation_parity.png",
        "generalisation_state_based_recall.png",
        "heatmap.png",
        "training_parity.png",
        "training_state_based_recall.png",
    ]
    assert (out / "report.md").is_file() and (out / "report.html").is_file()


def test_every_task_has_its_training_curves_in_both_reports(demo):
    markdown = (demo / "report" / "report.md").read_text()
    page = (demo / "report" / "report.html").read_text()
    for task in ("parity", "state_based_recall"):
        section = markdown.split(f"## Task: {task}")[1].split("\n## ")[0]
        assert "### Training curves" in section
        assert f"![{task}: training curves per seed](figures/training_{task}.png)" in section
        html_section = page.split(f"<h2>Task: {html.escape(task)}</h2>")[1].split("<h2>")[0]
        assert "<h3>Training curves</h3>" in html_section
        assert f'alt="{task}: training curves per seed"' in html_section
    assert "**Learned**: a seed has learned when its in-range token accuracy" in markdown
    assert "The seed range is kept" in markdown


def test_training_figure_draws_one_line_per_seed_from_the_store(demo):
    store = load_store(demo)
    analysis = analyse(store, n_boot=20)
    colours = plots.arch_colours(store.runs["arch"])
    best = analysis.best.set_index(["task_label", "arch", "seed"])
    for task in analysis.tasks:
        figure = plots.training_figure(analysis.training, task, colours)
        panels = [ax for ax in figure.axes if ax.get_visible()]
        assert len(panels) == 2 * 4  # loss above accuracy for A, G, M, GGGA
        losses = [ax for ax in panels if ax.get_ylabel() == "training loss"]
        accuracies = [ax for ax in panels if ax.get_ylabel() == "training accuracy"]
        titles = [ax.get_title() for ax in losses]
        assert titles == ["A: 3/3 learned", "G: 3/3 learned", "M: 3/3 learned", "GGGA: 3/3 learned"]
        for loss_ax, acc_ax in zip(losses, accuracies, strict=True):
            arch = loss_ax.get_title().split(":")[0]
            seeds = [line for line in acc_ax.get_lines() if line.get_label().startswith("seed ")]
            assert len(seeds) == 3 and len(loss_ax.get_lines()) == 3
            for seed, acc_line, loss_line in zip((0, 1, 2), seeds, loss_ax.get_lines()):
                run_id = best.loc[(task, arch, seed), "run_id"]
                logged = store.metrics[store.metrics["run_id"] == run_id].sort_values("step")
                tok_in = best.loc[(task, arch, seed), "tok_in"]
                assert acc_line.get_label() == f"seed {seed}, lr 0.001: in-range {tok_in:.2f}"
                assert list(acc_line.get_xdata()) == logged["step"].tolist()
                assert list(acc_line.get_ydata()) == pytest.approx(logged["acc"].tolist())
                assert list(loss_line.get_ydata()) == pytest.approx(logged["loss"].tolist())


def test_a_task_without_training_metrics_says_so(tmp_path):
    sweep = build_store(tmp_path / "sweep", tasks=("parity",), seeds=(0,), failures=False)
    db = sqlite3.connect(sweep / "hxt.sqlite")
    db.execute("DELETE FROM metrics")
    db.commit()
    db.close()
    names = {p.name for p in write_report(sweep, tmp_path / "out", n_boot=20)}
    assert "training_parity.png" not in names and "generalisation_parity.png" in names
    assert "Skipped: the store holds no training metrics" in (tmp_path / "out" / "report.md").read_text()


def test_html_is_valid_and_self_contained(demo):
    page = _Page()
    page.feed((demo / "report" / "report.html").read_text())
    page.close()
    assert page.stack == []
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    assert len(images) == len(list((demo / "report" / "figures").iterdir()))
    for attrs in images:
        assert attrs["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(attrs["src"].split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
        assert attrs["alt"]
    assert not [tag for tag, attrs in page.tags if tag in {"script", "link", "iframe"} or "href" in attrs]
    text = (demo / "report" / "report.html").read_text()
    for header in ("cafe1234", "abc1234", "24 done, 1 failed, 1 diverged", "hybrid exceeds parts"):
        assert header in text


def test_markdown_tables_match_the_frames(demo):
    text = (demo / "report" / "report.md").read_text()
    tables = _markdown_tables(text)
    analysis = analyse(load_store(demo))

    expected = verdict_table(analysis)
    shown = _find(tables, expected.columns)
    pd.testing.assert_frame_equal(shown, expected.astype(str), check_dtype=False)
    verdicts = analysis.verdicts.set_index("task_label")
    assert verdicts.loc["state_based_recall", "verdict"] == "hybrid exceeds parts"
    assert verdicts.loc["parity", "verdict"] == "ties"  # G alone already solves parity
    assert shown["out: hybrid"].tolist() == [f"{v:.3f}" for v in analysis.verdicts["hybrid_out"]]

    overview = verdict_overview_table(analysis)
    assert (
        overview.set_index("task").loc["state_based_recall", "GGGA"].startswith("hybrid exceeds parts (+0.")
    )
    pd.testing.assert_frame_equal(_find(tables, overview.columns), overview, check_dtype=False)

    for task in analysis.tasks:
        expected = summary_table(analysis, task)
        shown = _find(tables, expected.columns)
        rows = analysis.summary[analysis.summary["task_label"] == task].set_index("arch")
        assert shown["out: scaled"].tolist() == [f"{rows.at[a, 'scaled_out']:.3f}" for a in shown["arch"]]
        assert shown["in: token"].tolist() == [f"{rows.at[a, 'tok_in']:.3f}" for a in shown["arch"]]
        pd.testing.assert_frame_equal(shown, expected, check_dtype=False)
    recall = summary_table(analysis, "state_based_recall")
    assert "moved out: scaled" in recall.columns and "horizon: num_swaps" in recall.columns
    assert "horizon: num_swaps" not in summary_table(analysis, "parity").columns

    heat = heatmap_table(analysis)
    assert list(heat.columns) == ["task", "A", "G", "M", "GGGA"]
    pd.testing.assert_frame_equal(_find(tables, heat.columns), heat, check_dtype=False)
    assert "Skipped: the size-to-solve fit needs runs at two or more sizes." in text


def test_summary_table_counts_learned_seeds_and_shows_the_best_one(two_of_three):
    analysis = analyse(load_store(two_of_three), n_boot=20)
    table = summary_table(analysis, "parity").set_index("arch")
    assert table.loc["G", "learned"] == "2/3" and table.loc["A", "learned"] == "0/3"
    assert table.loc["A", "out: scaled, best seed"] == "0.800"
    assert table.loc["A", "out: scaled, seed range"].endswith(" – 0.800")
    columns = list(table.columns)
    assert columns.index("out: scaled, best seed") == columns.index("out: scaled") + 1


def _verdict_cells(text: str) -> list[str]:
    tables = _markdown_tables(text)
    (table,) = [t for t in tables if "verdict (out of range)" in t.columns]
    return table["verdict (out of range)"].tolist() + table["verdict (in range)"].tolist()


def test_two_seeds_with_32_examples_a_bin_give_no_verdict(tmp_path):
    sweep = build_store(tmp_path / "sweep", seeds=(0, 1), n_per_bin=32)
    write_report(sweep, tmp_path / "out", n_boot=200)
    text = (tmp_path / "out" / "report.md").read_text()
    assert set(_verdict_cells(text)) == {"too few seeds"}
    tables = _markdown_tables(text)
    (overview,) = [t for t in tables if list(t.columns) == ["task", "size", "GGGA"]]
    assert all(cell.startswith("too few seeds (") for cell in overview["GGGA"])
    (verdicts,) = [t for t in tables if "out: gap [95% CI]" in t.columns]
    assert all(cell.endswith("(no CI)") for cell in verdicts["out: gap [95% CI]"])


def test_one_seed_prints_no_interval_over_seeds(tmp_path):
    sweep = build_store(tmp_path / "sweep", seeds=(0,), failures=False)
    write_report(sweep, tmp_path / "out", n_boot=100)
    tables = _markdown_tables((tmp_path / "out" / "report.md").read_text())
    (verdicts,) = [t for t in tables if "out: gap [95% CI]" in t.columns]
    for column in ("out: gap [95% CI]", "in: gap [95% CI]"):
        assert all("[" not in cell and cell.endswith("(no CI)") for cell in verdicts[column])
    for table in tables:
        if "out: scaled, seed range" in table.columns:
            assert all(" – " not in cell for cell in table["out: scaled, seed range"])


def test_a_partial_sweep_says_the_hybrid_is_pending(tmp_path, capsys):
    sweep = build_store(tmp_path / "sweep", seeds=(0, 1, 2), failures=False)
    db = sqlite3.connect(sweep / "hxt.sqlite")
    hybrid = "SELECT run_id FROM runs WHERE arch = 'GGGA'"
    db.execute(f"DELETE FROM evals WHERE run_id IN ({hybrid})")
    db.execute(f"DELETE FROM metrics WHERE run_id IN ({hybrid})")
    db.execute("UPDATE runs SET status = 'pending' WHERE arch = 'GGGA' AND seed < 2")
    db.execute("UPDATE runs SET status = 'running' WHERE arch = 'GGGA' AND seed = 2")
    db.execute("UPDATE runs SET status = 'pending' WHERE arch = 'M' AND task = 'parity'")
    db.commit()
    db.close()
    main(["report", str(sweep), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "report.md").read_text()
    assert "No hybrid" not in text and "The sweep is not finished" in text
    assert set(_verdict_cells(text)) == {"pending"}
    assert "no finished run of GGGA yet (2 pending, 1 running)" in text


def test_report_is_regenerable_from_the_store_alone(demo, tmp_path):
    write_report(demo, tmp_path / "again")
    first = (demo / "report" / "report.md").read_text()
    assert (tmp_path / "again" / "report.md").read_text() == first


def test_fits_and_their_figures_appear_with_several_sizes(tmp_path):
    sweep = build_store(tmp_path / "sweep", sizes=(30_000, 100_000, 300_000, 1_000_000), failures=False)
    paths = write_report(sweep, tmp_path / "out", n_boot=100)
    names = {p.name for p in paths}
    assert {"solve_parity.png", "scaling_parity.png", "solve_state_based_recall.png"} <= names
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| arch | accuracy | size at 0.9 [95% CI] | slope / decade | status |" in text
    assert "| arch | E [95% CI] | A [95% CI] | α [95% CI] | params fitted |" in text
    assert text.count("| GGGA | out of range, vs params |") == 2
    assert text.count("| GGGA | out of range, vs state elements |") == 2


def test_two_sizes_fit_size_to_solve_but_skip_loss_scaling(tmp_path):
    sweep = build_store(tmp_path / "sweep", sizes=(30_000, 300_000), tasks=("parity",), failures=False)
    names = {p.name for p in write_report(sweep, tmp_path / "out", n_boot=50)}
    assert "solve_parity.png" in names and "scaling_parity.png" not in names
    text = (tmp_path / "out" / "report.md").read_text()
    assert "Skipped: the loss-scaling fit needs runs at three or more sizes." in text
    assert "not fitted" not in text


def _run_cli(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    return exit_.value.code, capsys.readouterr().err


def test_empty_store_exits_2_with_a_clear_message(tmp_path, capsys):
    connection = sqlite3.connect(tmp_path / "hxt.sqlite")
    connection.executescript(SCHEMA.read_text())
    connection.close()
    code, err = _run_cli(["report", str(tmp_path)], capsys)
    assert code == 2 and "no done runs" in err and "Traceback" not in err


def test_corrupt_store_exits_2_with_a_clear_message(tmp_path, capsys):
    (tmp_path / "hxt.sqlite").write_bytes(b"\x00garbage" * 512)
    code, err = _run_cli(["report", str(tmp_path)], capsys)
    assert code == 2 and "not an hxt store" in err


def test_missing_sweep_exits_2(tmp_path, capsys):
    code, err = _run_cli(["report", str(tmp_path / "absent")], capsys)
    assert code == 2 and "no sweep store at" in err


def test_analysis_never_imports_torch():
    code = "import sys, analysis.report; sys.exit('torch' in sys.modules or 'architectures' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
