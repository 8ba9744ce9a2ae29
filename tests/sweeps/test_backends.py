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
