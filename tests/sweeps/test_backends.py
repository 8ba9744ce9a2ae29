import pytest

from sweeps.backends import LocalExecutor, visible_gpus


def test_workers_are_spread_over_the_visible_gpus_by_their_ids(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible_gpus() == ["3", "5"]
    executor = LocalExecutor(workers=5, gpus=2, slots_per_gpu=3)
    assert [slot.gpu for slot in executor.slots] == ["3", "5", "3", "5", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,-1,4")  # CUDA ignores everything after -1
    assert visible_gpus() == ["2"]
    assert [slot.gpu for slot in LocalExecutor(workers=2, gpus=0).slots] == [None, None]


def test_bad_pool_sizes_are_user_errors():
    with pytest.raises(ValueError, match="--workers"):
        LocalExecutor(workers=0)
    with pytest.raises(ValueError, match="--slots-per-gpu"):
        LocalExecutor(workers=1, slots_per_gpu=0)


def test_the_driver_side_imports_no_torch():
    """Validation, the store, the lock and the executors run in the driver, which never needs torch
    (workers import it); `hxt sweep run` can then refuse a bad file or directory quickly."""
    import subprocess
    import sys

    modules = "sweeps.runner, sweeps.backends, sweeps.store, sweeps.lock, sweeps.progress, sweeps.files"
    code = f"import sys, {modules}, sweeps.cli_export, analysis.load; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
