"""The built-in network collector: counters per interface, rates from the second cycle, loopback left out."""

from __future__ import annotations

from collections import namedtuple

from edgemon.builtin import network

Counters = namedtuple("Counters", "bytes_sent bytes_recv packets_sent packets_recv errin errout dropin dropout")


def test_counters_then_rates_per_interface(monkeypatch):
    readings = iter(
        [
            {"eth0": Counters(1000, 5000, 10, 50, 0, 0, 0, 0), "lo": Counters(9, 9, 1, 1, 0, 0, 0, 0)},
            {"eth0": Counters(3000, 5000, 30, 50, 0, 1, 0, 2), "lo": Counters(99, 99, 2, 2, 0, 0, 0, 0)},
        ]
    )
    clock = iter([100.0, 102.0])
    monkeypatch.setattr(network.psutil, "net_io_counters", lambda pernic, nowrap: next(readings))
    monkeypatch.setattr(network.time, "monotonic", lambda: next(clock))
    collect = network.NetCollector()
    first = collect()["net"]
    assert set(first) == {"eth0"}, "loopback is not the device's network"
    assert first["eth0"]["tx_bytes"] == 1000
    assert "tx_bytes_per_s" not in first["eth0"], "no rate without a previous reading"
    second = collect()["net"]["eth0"]
    assert second["tx_bytes_per_s"] == 1000.0, "2,000 bytes in 2 s"
    assert second["rx_bytes_per_s"] == 0.0
    assert (second["tx_errors"], second["tx_dropped"]) == (1, 2)


def test_a_counter_that_goes_back_gives_no_negative_rate(monkeypatch):
    readings = iter([{"wlan0": Counters(5000, 0, 0, 0, 0, 0, 0, 0)}, {"wlan0": Counters(100, 0, 0, 0, 0, 0, 0, 0)}])
    clock = iter([1.0, 2.0])
    monkeypatch.setattr(network.psutil, "net_io_counters", lambda pernic, nowrap: next(readings))
    monkeypatch.setattr(network.time, "monotonic", lambda: next(clock))
    collect = network.NetCollector()
    collect()
    assert collect()["net"]["wlan0"]["tx_bytes_per_s"] == 0.0, "an interface that was reset"


def test_every_key_has_its_unit():
    from edgemon.agent import Agent  # noqa: F401 - the metadata is checked by the agent's registry

    for pattern, metric in network.METRICS.items():
        assert metric.unit in ("B", "B/s", "count"), pattern
