"""Thread settings: usable CPUs from affinity and cgroup quotas; the env override; clamping."""
from __future__ import annotations

import pytest
import torch

from samkit.errors import InputError
from samkit.threads import ENV, _cgroup_quota, configure_threads, usable_cpus


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("files,expect", [
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "garbage"}, None),
    ({"cpu/cpu.cfs_quota_us": "200000", "cpu/cpu.cfs_period_us": "100000"}, 2.0),
    ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
    ({}, None),
])
def test_cgroup_quota(tmp_path, files, expect):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert _cgroup_quota(tmp_path) == expect


def test_usable_cpus_is_capped_by_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU still means one thread
    assert usable_cpus(tmp_path) == 1
    assert 1 <= usable_cpus() <= (torch.get_num_threads() + 64)


def test_explicit_env_and_clamp(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert configure_threads(1) == 1 and torch.get_num_threads() == 1
    # clamp_only never raises a lower user setting
    assert configure_threads(clamp_only=True) == 1 and torch.get_num_threads() == 1
    torch.set_num_threads(usable_cpus() + 3)  # oversubscribed
    assert configure_threads(clamp_only=True) == usable_cpus() == torch.get_num_threads()
    monkeypatch.setenv(ENV, "1")
    assert configure_threads(clamp_only=True) == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv(ENV, "two")
    with pytest.raises(InputError, match="SAMKIT_NUM_THREADS"):
        configure_threads()
    monkeypatch.delenv(ENV)
    with pytest.raises(InputError, match="at least 1"):
        configure_threads(0)
