"""How a running sweep shows its progress: a live bar on a terminal, lines in a log, or nothing.

Without a terminal (nohup, a cluster job's log) every finished run gets one line, written the
moment its result is stored, and a summary line follows every `summary_every` seconds:

    [  3/24] done     parity GGGA 20k lr 0.003 seed 1: in-range acc 0.998, beyond 0.713, 12.4 s
    [  4/24] failed   parity A 20k lr 0.003 seed 0 (attempt 1 of 2, retrying): RuntimeError: ...
    progress: 4/24 finished (3 done, 1 diverged), 2 running, 18 to go; 1m05s elapsed, about 5m left
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["make_progress", "LogProgress", "BarProgress", "NoProgress", "run_label"]


def _count(n: int) -> str:
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if n >= scale:
            value = n / scale
            return f"{value:.3g}{unit}"
    return str(n)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def run_label(row: dict) -> str:
    """`parity GGGA 20k lr 0.003 seed 1` from a store row."""
    return f"{row['task']} {row['arch']} {_count(row['target_params'])} lr {row['lr']:g} seed {row['seed']}"


def _pooled(evals: list[dict], in_range: bool) -> float | None:
    rows = [e for e in evals if e.get("slice") == "all" and bool(e.get("in_range")) == in_range]
    tokens = sum(e["n_tokens"] for e in rows)
    return sum(e["token_acc"] * e["n_tokens"] for e in rows) / tokens if tokens else None


def _last_line(text) -> str:
    lines = (text or "").strip().splitlines()
    line = lines[-1] if lines else ""
    return line if len(line) <= 160 else line[:157] + "..."


def describe_result(row: dict, result: dict, attempt: int, max_attempts: int) -> str:
    """The log text for one finished attempt, without the counter."""
    status = result["status"]
    label = run_label(row)
    if status == "failed":
        retry = "retrying" if attempt < max_attempts else "no attempts left"
        error = _last_line(result.get("error"))
        return f"{status:<8} {label} (attempt {attempt} of {max_attempts}, {retry}): {error}"
    parts = []
    acc_in, acc_out = _pooled(result.get("evals") or [], True), _pooled(result.get("evals") or [], False)
    if acc_in is not None:
        parts.append(f"in-range acc {acc_in:.3f}")
    if acc_out is not None:
        parts.append(f"beyond {acc_out:.3f}")
    if status == "diverged":
        parts.append(_last_line(result.get("error")))
    if result.get("wall_seconds") is not None:
        parts.append(f"{result['wall_seconds']:.1f} s")
    return f"{status:<8} {label}: {', '.join(parts)}"


class NoProgress:
    """`--quiet`: nothing between the start and the final summary."""

    def note(self, text: str) -> None:
        """A line that shows in every mode (e.g. a stale lock taken over), on stderr."""
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def start(self, total: int, finished: int, to_run: int, where: str) -> None:
        pass

    def finished(self, row: dict, result: dict, attempt: int, max_attempts: int, final: bool) -> None:
        pass

    def update(self, running: int, counts: dict[str, int]) -> None:
        pass

    def stop(self) -> None:
        pass


class LogProgress(NoProgress):
    """One line per finished run and a periodic summary, each flushed at once (for logs)."""

    def __init__(self, stream: TextIO | None = None, summary_every: float = 60.0):
        self.stream = stream or sys.stdout
        self.summary_every = summary_every

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def start(self, total: int, finished: int, to_run: int, where: str) -> None:
        self.total, self.done_before, self.finished_now = total, finished, 0
        self.started = self.last_summary = time.monotonic()
        self.running, self.counts = 0, {}
        self._write(f"{total} runs: {finished} already finished, {to_run} to run on {where}")

    def finished(self, row: dict, result: dict, attempt: int, max_attempts: int, final: bool) -> None:
        if final:
            self.finished_now += 1
        counter = f"[{self.done_before + self.finished_now:>{len(str(self.total))}}/{self.total}]"
        self._write(f"{counter} {describe_result(row, result, attempt, max_attempts)}")

    def update(self, running: int, counts: dict[str, int]) -> None:
        self.running, self.counts = running, counts
        now = time.monotonic()
        if now - self.last_summary >= self.summary_every:
            self.last_summary = now
            self._write(self.summary())

    def summary(self) -> str:
        finished = self.done_before + self.finished_now
        left = self.total - finished
        elapsed = time.monotonic() - self.started
        by_status = ", ".join(f"{n} {status}" for status, n in sorted(self.counts.items()) if n)
        eta = (
            f", about {_duration(elapsed / self.finished_now * left)} left"
            if self.finished_now and left
            else ""
        )
        return (
            f"progress: {finished}/{self.total} finished ({by_status or 'none yet'}), "
            f"{self.running} running, {left} to go; {_duration(elapsed)} elapsed{eta}"
        )


class BarProgress(NoProgress):
    """A live rich bar (terminals), with a line above it for each failed attempt."""

    def start(self, total: int, finished: int, to_run: int, where: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "running {task.fields[running]}  failed {task.fields[failed]}  "
                "diverged {task.fields[diverged]}"
            ),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            transient=False,
        )
        self.bar = self.progress.add_task(
            "runs", total=total, completed=finished, running=0, failed=0, diverged=0
        )
        self.progress.start()

    def finished(self, row: dict, result: dict, attempt: int, max_attempts: int, final: bool) -> None:
        if result["status"] == "failed":
            self.progress.console.print(describe_result(row, result, attempt, max_attempts), markup=False)
        if final:
            self.progress.advance(self.bar)

    def update(self, running: int, counts: dict[str, int]) -> None:
        self.progress.update(
            self.bar, running=running, failed=counts.get("failed", 0), diverged=counts.get("diverged", 0)
        )

    def stop(self) -> None:
        self.progress.stop()


def make_progress(mode: str, summary_every: float = 60.0) -> NoProgress:
    """`mode`: "auto" (a bar on a terminal, else log lines), "bar", "log" or "none"."""
    if mode == "auto":
        mode = "bar" if sys.stdout.isatty() else "log"
    if mode == "bar":
        return BarProgress()
    if mode == "log":
        return LogProgress(summary_every=summary_every)
    if mode == "none":
        return NoProgress()
    raise ValueError(f"progress mode {mode!r} is not known; allowed values: auto, bar, log, none")
