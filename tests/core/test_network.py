"""The built-in network collector: counters per interface, rates from the second cycle, loopback left out."""

from __future__ import annotations

from collections import namedtuple

from edgemon.builtin import network

Counters = namedtuple("Counters", "bytes_sent bytes_recv packets_sent packets_recv errin errout dropin dropout")


def test_counters_then_rates_per_interface():
    readings = iter(
        [
            {"eth0": Counters(1000, 5000, 10, 50, 0, 0, 0, 0), "lo": Counters(9, 9, 1, 1, 0, 0, 0, 0)},
            {"eth0": Counters(3000, 5000, 30, 50, 0, 1, 0, 2), "lo": Counters(99, 99, 2, 2, 0, 0, 0, 0)},
        ]
    )
    clock = iter([100.0, 102.0])
    collect = network.NetCollector(lambda pernic, nowrap: next(readings), lambda: next(clock))
    first = collect()["net"]
    assert set(first) == {"eth0"}, "loopback is not the device's network"
    assert first["eth0"]["tx_bytes"] == 1000
    assert "tx_bytes_per_s" not in first["eth0"], "no rate without a previous reading"
    second = collect()["net"]["eth0"]
    assert second["tx_bytes_per_s"] == 1000.0, "2,000 bytes in 2 s"
    assert second["rx_bytes_per_s"] == 0.0
    assert (second["tx_errors"], second["tx_dropped"]) == (1, 2)


def test_a_counter_that_goes_back_gives_no_negative_rate():
    readings = iter([{"wlan0": Counters(5000, 0, 0, 0, 0, 0, 0, 0)}, {"wlan0": Counters(100, 0, 0, 0, 0, 0, 0, 0)}])
    clock = iter([1.0, 2.0])
    collect = network.NetCollector(lambda pernic, nowrap: next(readings), lambda: next(clock))
    collect()
    assert collect()["net"]["wlan0"]["tx_bytes_per_s"] == 0.0, "an interface that was reset"


def test_the_real_counters_of_this_machine_have_units_and_no_loopback():
    collect = network.NetCollector()
    collect()
    tree = collect()["net"]
    assert "lo" not in tree
    for interface in tree.values():
        assert interface["rx_bytes"] >= 0
        assert interface["rx_bytes_per_s"] >= 0
    assert {m.unit for m in network.METRICS.values()} == {"B", "B/s", "count"}
