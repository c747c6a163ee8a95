"""edgemon-disk: partition selection and IO rates from the previous cycle."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import psutil
import pytest

import edgemon_disk
from edgemon import payload

Part = namedtuple("Part", "device mountpoint fstype opts")
Usage = namedtuple("Usage", "total used free percent")
Io = namedtuple("Io", "read_count write_count read_bytes write_bytes read_time write_time busy_time")


@pytest.fixture
def fake_psutil(monkeypatch):
    state: dict[str, Any] = {
        "parts": [
            Part("/dev/sda1", "/", "ext4", "rw"),
            Part("/dev/mapper/vg-data", "/data", "xfs", "rw"),
            Part("/dev/loop3", "/snap/core/1", "squashfs", "ro"),
            Part("/dev/sda1", "/var/lib/docker", "ext4", "rw"),
        ],
        "io": {"sda": Io(10, 20, 1000, 2000, 5, 6, 100), "loop3": Io(1, 1, 1, 1, 1, 1, 1)},
        "now": 100.0,
        "partition_calls": 0,
    }

    def partitions(all=False):
        state["partition_calls"] += 1
        return state["parts"]

    monkeypatch.setattr(psutil, "disk_partitions", partitions)
    monkeypatch.setattr(psutil, "disk_usage", lambda m: Usage(1000, 250, 750, 25.0))
    monkeypatch.setattr(psutil, "disk_io_counters", lambda perdisk=False, nowrap=True: state["io"])
    monkeypatch.setattr("edgemon_disk.time.monotonic", lambda: state["now"])
    return state


def test_usage_per_partition_with_excludes(fake_psutil):
    disk = edgemon_disk.DiskCollector(edgemon_disk.DEFAULTS)()["disk"]
    assert set(disk["usage"]) == {"sda1", "mapper_vg_data"}
    assert disk["usage"]["sda1"] == {"mount": "/", "fstype": "ext4", "total": 1000, "used": 250, "free": 750,
                                     "percent": 25.0}  # fmt: skip
    assert set(disk["io"]) == {"sda"}, "loop devices excluded by default"
    assert payload.validation_errors(payload.build("d", 1, 0, 10, {"disk": disk})) == []


def test_include_and_exclude_mounts(fake_psutil):
    only_data = edgemon_disk.DiskCollector({**edgemon_disk.DEFAULTS, "include_mounts": ["/data"]})()
    assert set(only_data["disk"]["usage"]) == {"mapper_vg_data"}
    no_data = edgemon_disk.DiskCollector({**edgemon_disk.DEFAULTS, "exclude_mounts": ["/d*"]})()
    assert set(no_data["disk"]["usage"]) == {"sda1"}


def test_io_rates_from_previous_cycle(fake_psutil):
    collector = edgemon_disk.DiskCollector(edgemon_disk.DEFAULTS)
    first = collector()["disk"]["io"]["sda"]
    assert "read_bytes_per_s" not in first, "no rate before there is a previous sample"
    fake_psutil["now"] = 110.0
    fake_psutil["io"] = {"sda": Io(30, 20, 6000, 2000, 5, 6, 600)}
    second = collector()["disk"]["io"]["sda"]
    assert second["read_bytes_per_s"] == 500.0
    assert second["write_bytes_per_s"] == 0.0
    assert second["read_count_per_s"] == 2.0
    assert second["busy_percent"] == 5.0


def test_partition_list_is_cached(fake_psutil):
    collector = edgemon_disk.DiskCollector(edgemon_disk.DEFAULTS)
    collector()
    fake_psutil["now"] += 10
    collector()
    assert fake_psutil["partition_calls"] == 1
    fake_psutil["now"] += 60
    collector()
    assert fake_psutil["partition_calls"] == 2


def test_on_this_host(tmp_path):
    disk = edgemon_disk.DiskCollector(edgemon_disk.DEFAULTS)()["disk"]
    assert any(entry["mount"] == "/" for entry in disk["usage"].values())
