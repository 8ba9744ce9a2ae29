"""`hxt export` (a store's tables as Parquet or CSV) and the file writing that `hxt tasks export` shares.

Both only read the store or the generators; what they write goes to a path the user names, under a
temporary name first, so a file that exists under its final name is complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from sweeps.files import check_writable_dir

FORMATS = ("parquet", "csv", "jsonl")
TABLE_FORMATS = ("parquet", "csv")
PYARROW_INSTALL = "pip install pyarrow"


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ValueError(
            f"--format parquet needs pyarrow, which is not installed: {PYARROW_INSTALL}"
        ) from None
    return pyarrow


def write_frame(frame, path: Path, fmt: str, metadata: dict[str, str] | None = None) -> None:
    """Write a DataFrame as `fmt` to `path` (via a temporary file beside it); list cells stay lists in
    Parquet and JSON Lines, and become space-separated integers in CSV. Parquet keeps `metadata`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if fmt == "parquet":
            pa = _pyarrow()
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if metadata:
                table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
            pa.parquet.write_table(table, tmp)
        elif fmt == "csv":
            flat = frame.copy()
            for column in flat.columns:
                if len(flat) and isinstance(flat[column].iloc[0], list):
                    flat[column] = [" ".join(str(int(v)) for v in cell) for cell in flat[column]]
            flat.to_csv(tmp, index=False)
        else:
            frame.to_json(tmp, orient="records", lines=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def export(
    sweep_dir: Path = typer.Argument(..., help="A sweep directory holding the store (hxt.sqlite)."),
    fmt: str = typer.Option("parquet", "--format", help="parquet | csv."),
    out: Path = typer.Option(None, help="Directory to write the tables to (default: SWEEP_DIR/export)."),
) -> None:
    """Write the store's tables (runs, evals, metrics, configs, sweep) as Parquet or CSV files.

    The store is opened read-only. `runs` has one row per run with its config (config_json) and
    results; `evals` one row per run, evaluation bin and slice; `metrics` the training curves;
    `configs` every sweep file text the directory has run; `sweep` the header (key, value).
    """
    import pandas as pd

    from analysis.load import read_tables

    if fmt not in TABLE_FORMATS:
        raise ValueError(f"--format {fmt!r} is not known; allowed values: {', '.join(TABLE_FORMATS)}")
    if fmt == "parquet":
        _pyarrow()
    path, sweep, tables = read_tables(sweep_dir)
    out = Path(out) if out is not None else path.parent / "export"
    check_writable_dir(out, "--out")
    out.mkdir(parents=True, exist_ok=True)
    tables["sweep"] = pd.DataFrame(sorted(sweep.items()), columns=["key", "value"])
    for name, frame in tables.items():
        target = out / f"{name}.{fmt}"
        write_frame(frame, target, fmt, {"hxt_store": str(path), "hxt_table": name})
        typer.echo(f"{target}  ({len(frame)} rows)")


def task_examples(task, seed: int, n: int, knobs: dict, chunk: int = 4096):
    """`n` examples of `task` as a DataFrame: token lists trimmed of padding, and every meta field.

    Examples come in chunks of `chunk`; chunk c is `task.sample(derive_seed(seed, f"export/{c}"), ...)`,
    so the same (seed, n, knobs) always gives the same rows, on any machine.
    """
    import numpy as np
    import pandas as pd

    from synthetic_tasks import derive_seed

    frames = []
    for c, start in enumerate(range(0, n, chunk)):
        size = min(chunk, n - start)
        batch = task.sample(derive_seed(seed, f"export/{c}"), size, **knobs)
        not_pad = batch.inputs != task.pad_id
        # each example's length: one past its last non-padding position
        lengths = np.where(
            not_pad.any(axis=1), batch.inputs.shape[1] - np.argmax(not_pad[:, ::-1], axis=1), 0
        )
        frame = pd.DataFrame(
            {
                "example": np.arange(start, start + size),
                "inputs": [row[:k].tolist() for row, k in zip(batch.inputs, lengths)],
                "targets": [row[:k].tolist() for row, k in zip(batch.targets, lengths)],
                "loss_mask": [row[:k].astype(bool).tolist() for row, k in zip(batch.loss_mask, lengths)],
                "seq_len": lengths.astype(np.int64),
            }
        )
        for key, values in batch.meta.items():
            frame[key] = np.asarray(values)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def task_metadata(name: str, task, seed: int, knobs: dict) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        hxt_version = version("hxt")
    except PackageNotFoundError:
        hxt_version = "0+unknown"
    return {
        "hxt_task": name,
        "hxt_params": json.dumps(task.params(), sort_keys=True),
        "hxt_knobs": json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in knobs.items()}),
        "hxt_seed": str(seed),
        "hxt_vocab_size": str(task.vocab_size),
        "hxt_pad_id": str(task.pad_id),
        "hxt_chance_accuracy": repr(task.chance_accuracy),
        "hxt_version": hxt_version,
    }
