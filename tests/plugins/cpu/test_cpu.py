"""edgemon-cpu on this host, and its handling of absent sensors and caches."""

from __future__ import annotations

from collections import namedtuple

import psutil
import pytest

import edgemon_cpu
from edgemon import payload


@pytest.fixture
def settings():
    return dict(edgemon_cpu.DEFAULTS)


def test_reports_percent_times_load_and_counts(settings):
    cpu = edgemon_cpu.CpuCollector(settings)()["cpu"]
    assert 0 <= cpu["percent"] <= 100
    assert cpu["count"]["logical"] == psutil.cpu_count()
    assert set(cpu["core"]) == {str(i) for i in range(psutil.cpu_count() or 0)}
    assert {"user", "system", "idle"} <= set(cpu["times"])
    assert set(cpu["load"]) == {"load1", "load5", "load15"}
    doc = payload.build("d", 1, 0, 10, {"cpu": cpu})
    assert payload.validation_errors(doc) == []


def test_percent_is_measured_between_calls_without_blocking(settings, monkeypatch):
    calls = []
    real = psutil.cpu_percent

    def spy(interval=None, percpu=False):
        calls.append(interval)
        return real(interval=None, percpu=percpu)

    monkeypatch.setattr(psutil, "cpu_percent", spy)
    collector = edgemon_cpu.CpuCollector(settings)
    collector()
    collector()
    assert all(i is None for i in calls), "never a blocking interval"


def test_absent_sensors_mean_absent_key_not_error(settings, monkeypatch):
    monkeypatch.setattr(psutil, "sensors_temperatures", lambda: {}, raising=False)
    assert "temp" not in edgemon_cpu.CpuCollector(settings)()["cpu"]
    monkeypatch.delattr(psutil, "sensors_temperatures", raising=False)
    assert "temp" not in edgemon_cpu.CpuCollector(settings)()["cpu"]


def test_temperatures_keyed_by_chip_and_label(settings, monkeypatch):
    shwtemp = namedtuple("shwtemp", "label current high critical")
    chips = {
        "coretemp": [shwtemp("Package id 0", 51.0, 80, 100), shwtemp("Core 0", 49.0, 80, 100)],
        "acpitz": [shwtemp("", 27.8, None, None)],
    }
    monkeypatch.setattr(psutil, "sensors_temperatures", lambda: chips, raising=False)
    temp = edgemon_cpu.CpuCollector(settings)()["cpu"]["temp"]
    assert temp == {"coretemp": {"Package_id_0": 51.0, "Core_0": 49.0}, "acpitz": {"0": 27.8}}


def test_frequency_is_cached(settings, monkeypatch):
    scpufreq = namedtuple("scpufreq", "current min max")
    calls = []

    def cpu_freq():
        calls.append(1)
        return scpufreq(1500.0 + len(calls), 800.0, 3000.0)

    monkeypatch.setattr(psutil, "cpu_freq", cpu_freq)
    collector = edgemon_cpu.CpuCollector({**settings, "freq_every": 3600})
    first = collector()["cpu"]["freq"]
    second = collector()["cpu"]["freq"]
    assert first == second == {"current_mhz": 1501.0, "min_mhz": 800.0, "max_mhz": 3000.0}
    assert len(calls) == 1


def test_process_walk_is_opt_in(settings, monkeypatch):
    walked: list[int] = []

    def process_iter(attrs=None):
        walked.append(1)
        return iter([])

    monkeypatch.setattr(psutil, "process_iter", process_iter)
    assert "procs" not in edgemon_cpu.CpuCollector(settings)()["cpu"]
    assert walked == []
    procs = edgemon_cpu.CpuCollector({**settings, "processes": True})()["cpu"]["procs"]
    assert procs == {"total": 0}
    assert walked == [1]
