"""edgemon-gpu-nvml: NVIDIA GPUs through NVML, with a Jetson sysfs fallback.

``pynvml`` (from ``nvidia-ml-py``) is imported in ``edgemon_startup``, never
at module import, so a host without it still lists the plugin, as
*unavailable*. Every NVML call is isolated: a field a card does not support
(``NVMLError_NotSupported``, e.g. fan speed on a passively cooled
datacenter card) is left out and the rest of that GPU is kept.

On NVIDIA Jetson boards NVML does not exist; the GPU load and frequency the
kernel exposes in sysfs are reported instead.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from edgemon import Metric, PluginUnavailable, RegisterCollector, SettingsSpec, hookimpl

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {"processes": True, "sysfs_root": "/", "jetson": True}
METRICS = {
    "gpu-*-utilization-gpu": Metric("%", headline="GPU", description="time a kernel ran (the busiest GPU heads)"),
    "gpu-*-utilization-memory": Metric("%", description="time device memory was read or written"),
    "gpu-*-memory-percent": Metric("%"),
    "gpu-*-memory-*": Metric("B"),
    "gpu-*-temperature": Metric("°C"),
    "gpu-*-power-*": Metric("W"),
    "gpu-*-clocks-*": Metric("MHz"),
    "gpu-*-**-percent": Metric("%"),
}

JETSON_LOAD_FILES = (
    "sys/devices/gpu.0/load",
    "sys/devices/platform/gpu.0/load",
    "sys/devices/platform/bus@0/17000000.gpu/load",
    "sys/devices/platform/17000000.ga10b/load",
    "sys/devices/17000000.ga10b/load",
    "sys/devices/17000000.gv11b/load",
    "sys/devices/57000000.gpu/load",
)
JETSON_DEVFREQ_NAMES = ("gpu", "ga10b", "gv11b", "gp10b", "gk20a")


def load_nvml() -> ModuleType:
    """Import ``pynvml``: the module boundary that tests replace with a fake."""
    return importlib.import_module("pynvml")


class NvmlCollector:
    """Reads every GPU's fields through NVML, one isolated call at a time."""

    def __init__(self, nvml: ModuleType, settings: Mapping[str, Any]) -> None:
        """Read the static facts (count, names, UUIDs) once."""
        self.nvml = nvml
        self.processes = bool(settings["processes"])
        self._warned: set[tuple[int, str, str]] = set()
        self.handles: list[Any] = []
        self.static: list[dict[str, Any]] = []
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            self.handles.append(handle)
            facts: dict[str, Any] = {}
            for key, getter in (("name", nvml.nvmlDeviceGetName), ("uuid", nvml.nvmlDeviceGetUUID)):
                value = self._call(i, key, getter, handle)
                if value is not None:
                    facts[key] = _text(value)
            self.static.append(facts)

    def _call(self, index: int, field: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self.nvml.NVMLError as exc:
            key = (index, field, type(exc).__name__)
            if key not in self._warned:
                self._warned.add(key)
                not_supported = isinstance(exc, getattr(self.nvml, "NVMLError_NotSupported", ()))
                log.log(
                    logging.DEBUG if not_supported else logging.WARNING,
                    "NVML field unavailable",
                    extra={"plugin": "gpu-nvml", "reason": f"gpu {index} {field}: {exc}"},
                )
            return None

    def gpu(self, index: int, handle: Any) -> dict[str, Any]:
        """Return one GPU's sub-tree; fields whose call failed are absent."""
        nv = self.nvml
        out: dict[str, Any] = dict(self.static[index])
        if (util := self._call(index, "utilization", nv.nvmlDeviceGetUtilizationRates, handle)) is not None:
            out["utilization"] = {"gpu": util.gpu, "memory": util.memory}
        if (mem := self._call(index, "memory", nv.nvmlDeviceGetMemoryInfo, handle)) is not None:
            percent = round(100.0 * mem.used / mem.total, 2) if mem.total else 0.0
            out["memory"] = {"total": mem.total, "used": mem.used, "free": mem.free, "percent": percent}
        temp = self._call(index, "temperature", nv.nvmlDeviceGetTemperature, handle, nv.NVML_TEMPERATURE_GPU)
        if temp is not None:
            out["temperature"] = temp
        power: dict[str, float] = {}
        if (draw := self._call(index, "power_draw", nv.nvmlDeviceGetPowerUsage, handle)) is not None:
            power["draw_w"] = draw / 1000.0
        if (limit := self._call(index, "power_limit", nv.nvmlDeviceGetEnforcedPowerLimit, handle)) is not None:
            power["limit_w"] = limit / 1000.0
        if power:
            out["power"] = power
        if (fan := self._call(index, "fan", nv.nvmlDeviceGetFanSpeed, handle)) is not None:
            out["fan_percent"] = fan
        clocks: dict[str, int] = {}
        for key, clock in (("sm_mhz", nv.NVML_CLOCK_SM), ("mem_mhz", nv.NVML_CLOCK_MEM)):
            if (mhz := self._call(index, key, nv.nvmlDeviceGetClockInfo, handle, clock)) is not None:
                clocks[key] = mhz
        if clocks:
            out["clock"] = clocks
        if self.processes:
            procs = self._call(index, "processes", nv.nvmlDeviceGetComputeRunningProcesses, handle)
            if procs is not None:
                out["processes"] = {str(p.pid): _process(p) for p in procs}
        return out

    def __call__(self) -> dict[str, Any]:
        """Return ``{"gpu": {"count": N, "0": {...}, ...}}``."""
        tree: dict[str, Any] = {"count": len(self.handles)}
        for i, handle in enumerate(self.handles):
            tree[str(i)] = self.gpu(i, handle)
        return {"gpu": tree}


def _text(value: Any) -> str:
    return (value.decode() if isinstance(value, bytes) else str(value))[:256]


def _process(proc: Any) -> dict[str, Any]:
    import psutil  # noqa: PLC0415 - only when processes are reported

    out: dict[str, Any] = {}
    used = getattr(proc, "usedGpuMemory", None)
    if isinstance(used, int):
        out["used_memory"] = used
    with contextlib.suppress(psutil.Error, OSError):  # gone, or in another PID namespace
        out["name"] = psutil.Process(proc.pid).name()[:256]
    return out


class JetsonCollector:
    """GPU load and frequency from a Jetson's sysfs (no NVML on Tegra)."""

    def __init__(self, load_file: Path | None, devfreq: Path | None) -> None:
        """Use the load file and devfreq directory found by :func:`find_jetson`."""
        self.load_file = load_file
        self.devfreq = devfreq

    def __call__(self) -> dict[str, Any]:
        """Return ``{"gpu": {"count": 1, "0": {...}}}``."""
        gpu: dict[str, Any] = {"name": "NVIDIA Tegra (sysfs)"}
        if self.load_file is not None:
            gpu["utilization"] = {"gpu": int(self.load_file.read_text().strip()) / 10.0}
        if self.devfreq is not None:
            clock: dict[str, float] = {}
            for key, fname in (("sm_mhz", "cur_freq"), ("max_mhz", "max_freq"), ("min_mhz", "min_freq")):
                path = self.devfreq / fname
                if path.exists():
                    clock[key] = int(path.read_text().strip()) / 1e6
            if clock:
                gpu["clock"] = clock
        return {"gpu": {"count": 1, "0": gpu}}


def find_jetson(root: Path) -> JetsonCollector | None:
    """Look for a Tegra GPU's load file and devfreq node under ``root``."""
    load_file = next((root / rel for rel in JETSON_LOAD_FILES if (root / rel).is_file()), None)
    devfreq = None
    base = root / "sys/class/devfreq"
    if base.is_dir():
        for node in sorted(base.iterdir()):
            if any(tag in node.name for tag in JETSON_DEVFREQ_NAMES) and (node / "cur_freq").is_file():
                devfreq = node
                break
    if load_file is None and devfreq is None:
        return None
    return JetsonCollector(load_file, devfreq)


_state: dict[str, Any] = {}


@hookimpl
def edgemon_settings_spec() -> SettingsSpec:
    """``[plugins.gpu-nvml]``: processes, jetson fallback, sysfs_root (for tests)."""
    return SettingsSpec(DEFAULTS)


@hookimpl
def edgemon_startup(settings: Mapping[str, Any]) -> None:
    """Initialise NVML; fall back to Jetson sysfs; else declare the plugin unavailable."""
    _state.clear()
    reasons: list[str] = []
    try:
        nvml = load_nvml()
    except ImportError as exc:
        reasons.append(f"pynvml not importable ({exc}); pip install nvidia-ml-py")
    else:
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            reasons.append(f"NVML unavailable: {exc}")
        else:
            try:
                collector = NvmlCollector(nvml, settings)
            except nvml.NVMLError as exc:
                nvml.nvmlShutdown()
                reasons.append(f"NVML failed listing GPUs: {exc}")
            else:
                if collector.handles:
                    _state.update(nvml=nvml, collector=collector)
                    return
                nvml.nvmlShutdown()
                reasons.append("NVML found no GPU")
    if settings["jetson"] and (jetson := find_jetson(Path(settings["sysfs_root"]))) is not None:
        _state["collector"] = jetson
        return
    raise PluginUnavailable("; ".join(reasons) + ("; no Jetson GPU in sysfs" if settings["jetson"] else ""))


@hookimpl
def edgemon_register_collectors(register: RegisterCollector) -> None:
    """Register the ``gpu`` collector chosen at start-up."""
    register("gpu", _state["collector"], metrics=METRICS)


@hookimpl
def edgemon_shutdown() -> None:
    """Shut NVML down if it was initialised."""
    nvml = _state.pop("nvml", None)
    if nvml is not None:
        nvml.nvmlShutdown()
