"""A fake ``pynvml`` for tests: the real module's error classes and constants, fake GPUs.

Only the functions edgemon calls exist, with the real signatures; anything
else raises ``AttributeError`` as a missing NVML symbol would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType, SimpleNamespace
from typing import Any

import pynvml as real


@dataclass
class FakeGpu:
    name: str = "NVIDIA H200"
    uuid: str = "GPU-00000000-1111-2222-3333-444444444444"
    util: tuple[int, int] = (37, 12)
    memory: tuple[int, int] = (150_000_000_000, 30_000_000_000)  # total, used
    temperature: int = 41
    power_mw: int = 123_456
    limit_mw: int = 700_000
    fan: int | None = 30
    clocks: tuple[int, int] = (1980, 3201)
    processes: list[tuple[int, int | None]] = field(default_factory=list)
    errors: dict[str, type[Exception]] = field(default_factory=dict)
    """function name -> error class that function raises for this GPU."""


def make_fake_nvml(gpus: list[FakeGpu], init_error: type[Exception] | None = None) -> ModuleType:
    mod = ModuleType("pynvml")
    for name in dir(real):
        if name.startswith("NVMLError") or name.startswith("NVML_"):
            setattr(mod, name, getattr(real, name))
    calls: list[str] = []
    mod.calls = calls  # type: ignore[attr-defined]

    def log(name: str) -> None:
        calls.append(name)

    def gpu_call(fname: str, handle: FakeGpu) -> None:
        log(fname)
        if fname in handle.errors:
            raise handle.errors[fname]()

    def nvmlInit() -> None:
        log("nvmlInit")
        if init_error is not None:
            raise init_error()

    def nvmlShutdown() -> None:
        log("nvmlShutdown")

    def nvmlDeviceGetCount() -> int:
        return len(gpus)

    def nvmlDeviceGetHandleByIndex(i: int) -> FakeGpu:
        return gpus[i]

    def getter(fname: str, fn: Any) -> Any:
        def call(handle: FakeGpu, *args: Any) -> Any:
            gpu_call(fname, handle)
            return fn(handle, *args)

        call.__name__ = fname
        return call

    funcs = {
        "nvmlDeviceGetName": lambda h: h.name,
        "nvmlDeviceGetUUID": lambda h: h.uuid,
        "nvmlDeviceGetUtilizationRates": lambda h: SimpleNamespace(gpu=h.util[0], memory=h.util[1]),
        "nvmlDeviceGetMemoryInfo": lambda h: SimpleNamespace(
            total=h.memory[0], used=h.memory[1], free=h.memory[0] - h.memory[1]
        ),
        "nvmlDeviceGetTemperature": lambda h, sensor: h.temperature,
        "nvmlDeviceGetPowerUsage": lambda h: h.power_mw,
        "nvmlDeviceGetEnforcedPowerLimit": lambda h: h.limit_mw,
        "nvmlDeviceGetFanSpeed": _fan,
        "nvmlDeviceGetClockInfo": lambda h, clock: h.clocks[0] if clock == real.NVML_CLOCK_SM else h.clocks[1],
        "nvmlDeviceGetComputeRunningProcesses": lambda h: [
            SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in h.processes
        ],
    }
    for fname, fn in funcs.items():
        setattr(mod, fname, getter(fname, fn))
    mod.nvmlInit = nvmlInit  # type: ignore[attr-defined]
    mod.nvmlShutdown = nvmlShutdown  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = nvmlDeviceGetCount  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = nvmlDeviceGetHandleByIndex  # type: ignore[attr-defined]
    return mod


def _fan(h: FakeGpu) -> int:
    if h.fan is None:  # a passively cooled datacenter card
        raise real.NVMLError_NotSupported()
    return h.fan


FIELD_FUNCS = [
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetEnforcedPowerLimit",
    "nvmlDeviceGetFanSpeed",
    "nvmlDeviceGetClockInfo",
    "nvmlDeviceGetComputeRunningProcesses",
]
