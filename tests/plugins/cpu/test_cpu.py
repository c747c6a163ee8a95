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
    real = psutil.cpu_times

    def spy(percpu=False):
        calls.append(percpu)
        return real(percpu=percpu)

    monkeypatch.setattr(psutil, "cpu_percent", lambda *a, **k: pytest.fail("cpu_percent keeps per-thread state"))
    monkeypatch.setattr(psutil, "cpu_times", spy)
    collector = edgemon_cpu.CpuCollector(settings)
    collector()
    collector()
    assert calls == [True, True, True], "one read of the CPU times per call (plus one at start), never blocking"


def test_percent_comes_from_the_deltas_of_the_cpu_times(settings, monkeypatch):
    scputimes = namedtuple("scputimes", "user nice system idle iowait irq softirq steal guest guest_nice")
    samples = iter(
        [
            [scputimes(100, 0, 50, 800, 50, 0, 0, 0, 0, 0), scputimes(100, 0, 50, 850, 0, 0, 0, 0, 0, 0)],
            # core 0: +60 busy of +100; core 1: +0 busy of +100 (all idle)
            [scputimes(150, 0, 60, 830, 60, 0, 0, 0, 0, 0), scputimes(100, 0, 50, 950, 0, 0, 0, 0, 0, 0)],
        ]
    )
    monkeypatch.setattr(psutil, "cpu_times", lambda percpu=False: next(samples))
    monkeypatch.setattr(edgemon_cpu, "MIN_WINDOW", 0.0)
    cpu = edgemon_cpu.CpuCollector(settings)()["cpu"]
    assert cpu["core"] == {"0": {"percent": 60.0}, "1": {"percent": 0.0}}
    assert cpu["percent"] == 30.0
    assert cpu["times"]["user"] == 25.0
    assert cpu["times"]["idle"] == 65.0
    assert cpu["times"]["iowait"] == 5.0


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


def test_first_sample_of_once_is_real_while_a_busy_loop_runs(agent_env):
    """The collector runs in a worker thread: its first sample must not be psutil's per-thread 0.0."""
    import json
    import subprocess
    import sys

    from tests.conftest import run_agent

    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        result = run_agent("once", env={**agent_env, "EDGEMON_LOAD_PLUGINS": "cpu"})
    finally:
        busy.kill()
        busy.wait()
    assert result.returncode == 0, result.stderr
    cpu = json.loads(result.stdout)["metrics"]["cpu"]
    assert cpu["percent"] > 0
    assert cpu["times"]["user"] > 0
