"""edgemon-gpu-nvml against a fake NVML at the ``pynvml`` module boundary, and a fake Jetson sysfs."""

from __future__ import annotations

import os
import sys

import pynvml
import pytest

import edgemon_gpu_nvml as gpu
from edgemon import PluginUnavailable, payload
from tests.plugins.gpu_nvml.fake_nvml import FIELD_FUNCS, FakeGpu, make_fake_nvml

SETTINGS = {**gpu.DEFAULTS, "sysfs_root": "/nonexistent-sysfs"}


@pytest.fixture
def install_nvml(monkeypatch):
    def install(gpus, init_error=None):
        fake = make_fake_nvml(gpus, init_error)
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        return fake

    yield install
    gpu.edgemon_shutdown()


def collect():
    gpu.edgemon_startup(SETTINGS)
    tree = gpu._state["collector"]()
    assert payload.validation_errors(payload.build("d", 1, 0, 10, tree)) == []
    return tree["gpu"]


def test_no_gpu_is_unavailable_and_shuts_nvml_down(install_nvml):
    fake = install_nvml([])
    with pytest.raises(PluginUnavailable, match="NVML found no GPU"):
        gpu.edgemon_startup(SETTINGS)
    assert fake.calls == ["nvmlInit", "nvmlShutdown"]


@pytest.mark.parametrize("error", [pynvml.NVMLError_LibraryNotFound, pynvml.NVMLError_DriverNotLoaded])
def test_no_library_or_driver_is_unavailable(install_nvml, error):
    install_nvml([FakeGpu()], init_error=error)
    with pytest.raises(PluginUnavailable, match="NVML unavailable"):
        gpu.edgemon_startup(SETTINGS)


def test_pynvml_not_installed_is_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    with pytest.raises(PluginUnavailable, match="pip install nvidia-ml-py"):
        gpu.edgemon_startup(SETTINGS)


def test_one_gpu_every_field(install_nvml):
    install_nvml([FakeGpu(processes=[(os.getpid(), 2_000_000_000), (999_999_999, None)])])
    tree = collect()
    assert tree["count"] == 1
    g = tree["0"]
    assert g["name"] == "NVIDIA H200"
    assert g["uuid"].startswith("GPU-")
    assert g["utilization"] == {"gpu": 37, "memory": 12}
    assert g["memory"] == {"total": 150_000_000_000, "used": 30_000_000_000, "free": 120_000_000_000,
                           "percent": 20.0}  # fmt: skip
    assert g["temperature"] == 41
    assert g["power"] == {"draw_w": 123.456, "limit_w": 700.0}
    assert g["fan_percent"] == 30
    assert g["clock"] == {"sm_mhz": 1980, "mem_mhz": 3201}
    me = g["processes"][str(os.getpid())]
    assert me["used_memory"] == 2_000_000_000
    assert me["name"]
    assert g["processes"]["999999999"] == {}, "vanished process, no memory figure: present, empty"


def test_datacenter_card_without_fan_keeps_the_rest(install_nvml):
    install_nvml([FakeGpu(fan=None)])
    g = collect()["0"]
    assert "fan_percent" not in g
    assert g["temperature"] == 41
    assert g["power"]["draw_w"] == 123.456


@pytest.mark.parametrize("func", FIELD_FUNCS)
@pytest.mark.parametrize(
    "error",
    [
        pynvml.NVMLError_NotSupported,
        pynvml.NVMLError_NoPermission,
        pynvml.NVMLError_GpuIsLost,
        pynvml.NVMLError_Unknown,
        pynvml.NVMLError_Timeout,
    ],
)
def test_each_call_error_drops_only_its_field(install_nvml, func, error):
    install_nvml([FakeGpu(errors={func: error}, processes=[(1, 10)])])
    reference = FakeGpu(processes=[(1, 10)])
    g = collect()["0"]
    install_nvml([reference])
    full = collect()["0"]
    missing = set(full) - set(g)
    changed = {k for k in set(full) & set(g) if full[k] != g[k]}
    assert len(missing | changed) == 1, (missing, changed)
    expected = {
        "nvmlDeviceGetUtilizationRates": "utilization",
        "nvmlDeviceGetMemoryInfo": "memory",
        "nvmlDeviceGetTemperature": "temperature",
        "nvmlDeviceGetPowerUsage": "power",
        "nvmlDeviceGetEnforcedPowerLimit": "power",
        "nvmlDeviceGetFanSpeed": "fan_percent",
        "nvmlDeviceGetClockInfo": "clock",
        "nvmlDeviceGetComputeRunningProcesses": "processes",
    }[func]
    assert missing | changed == {expected}


def test_two_gpus_one_lost(install_nvml):
    lost = {f: pynvml.NVMLError_GpuIsLost for f in FIELD_FUNCS}
    install_nvml([FakeGpu(), FakeGpu(name="NVIDIA A2", uuid="GPU-2", errors=lost)])
    tree = collect()
    assert tree["count"] == 2
    assert tree["0"]["utilization"] == {"gpu": 37, "memory": 12}
    assert tree["1"] == {"name": "NVIDIA A2", "uuid": "GPU-2"}


def test_static_fields_read_once(install_nvml):
    fake = install_nvml([FakeGpu()])
    gpu.edgemon_startup(SETTINGS)
    collector = gpu._state["collector"]
    collector()
    collector()
    assert fake.calls.count("nvmlDeviceGetName") == 1
    assert fake.calls.count("nvmlDeviceGetUtilizationRates") == 2


def test_processes_can_be_turned_off(install_nvml):
    install_nvml([FakeGpu(processes=[(1, 10)])])
    gpu.edgemon_startup({**SETTINGS, "processes": False})
    assert "processes" not in gpu._state["collector"]()["gpu"]["0"]


def test_through_the_agent_with_shutdown(install_nvml, make_agent):
    fake = install_nvml([FakeGpu(), FakeGpu(uuid="GPU-B")])
    agent = make_agent(("gpu-nvml", gpu), plugins={"gpu-nvml": {"sysfs_root": "/nonexistent"}})
    doc = agent.cycle()
    assert doc["metrics"]["gpu"]["count"] == 2
    assert doc["metrics"]["gpu"]["1"]["uuid"] == "GPU-B"
    agent.close()
    assert fake.calls[-1] == "nvmlShutdown"


def test_unavailable_through_the_agent(install_nvml, make_agent):
    install_nvml([])
    agent = make_agent(("gpu-nvml", gpu), plugins={"gpu-nvml": {"sysfs_root": "/nonexistent"}})
    assert agent.records["gpu-nvml"].status == "unavailable"
    assert "gpu" not in agent.cycle()["metrics"]


def make_jetson(root, load="523", freq="918000000", name="17000000.ga10b"):
    load_file = root / "sys/devices/platform/17000000.ga10b/load"
    load_file.parent.mkdir(parents=True)
    load_file.write_text(f"{load}\n")
    devfreq = root / "sys/class/devfreq" / name
    devfreq.mkdir(parents=True)
    (devfreq / "cur_freq").write_text(f"{freq}\n")
    (devfreq / "max_freq").write_text("1300500000\n")
    (devfreq / "min_freq").write_text("306000000\n")
    (root / "sys/class/devfreq/3d00000.host1x").mkdir()


def test_jetson_sysfs_fallback(install_nvml, tmp_path):
    install_nvml([], init_error=pynvml.NVMLError_LibraryNotFound)
    make_jetson(tmp_path)
    gpu.edgemon_startup({**SETTINGS, "sysfs_root": str(tmp_path)})
    tree = gpu._state["collector"]()
    assert tree == {
        "gpu": {
            "count": 1,
            "0": {
                "name": "NVIDIA Tegra (sysfs)",
                "utilization": {"gpu": 52.3},
                "clock": {"sm_mhz": 918.0, "max_mhz": 1300.5, "min_mhz": 306.0},
            },
        }
    }


def test_jetson_fallback_can_be_disabled(install_nvml, tmp_path):
    install_nvml([], init_error=pynvml.NVMLError_LibraryNotFound)
    make_jetson(tmp_path)
    with pytest.raises(PluginUnavailable):
        gpu.edgemon_startup({**SETTINGS, "sysfs_root": str(tmp_path), "jetson": False})
