"""What the device a run trains on can do, and the fast-mode values that follow from it.

The fast mode's bf16 autocast is 2.5x faster than fp32 on a CPU with AVX-512 BF16 or AMX, and
9-17x *slower* on an AVX2-only CPU, which has no bf16 arithmetic and emulates it. So ``amp:
auto`` is resolved here, by the trainer, on the machine that runs it (a Ray worker, not the
driver): bf16 where the device computes it natively, fp16 on a CUDA card that has fp16 tensor
cores but no bf16, fp32 elsewhere. The rule reads the device's capabilities (no timing, so the
choice is the same on every run and every trial of a machine); docs/performance.md gives the
figures it rests on.

A CPU is described as torch will use it: ``ATEN_CPU_CAPABILITY`` and ``ONEDNN_MAX_CPU_ISA`` cap
the instruction sets torch's kernels use, and a capped AMX machine computes like an AVX2 one.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

# The CPU kinds, slowest first. "AVX-512 BF16" and "AMX" compute bf16 natively.
CPU_ISAS = ("baseline", "AVX2", "AVX-512", "AVX-512 BF16", "AMX")
NATIVE_BF16_ISAS = frozenset({"AVX-512 BF16", "AMX"})
# oneDNN's ISA names (ONEDNN_MAX_CPU_ISA) -> the highest CPU kind they let kernels use.
ONEDNN_CAPS = {
    "SSE41": "baseline",
    "AVX": "baseline",
    "AVX2": "AVX2",
    "AVX2_VNNI": "AVX2",
    "AVX2_VNNI_2": "AVX2",
    "AVX512_CORE": "AVX-512",
    "AVX512_CORE_VNNI": "AVX-512",
    "AVX512_CORE_BF16": "AVX-512 BF16",
    "AVX512_CORE_FP16": "AVX-512 BF16",
    "AVX10_1_512": "AVX-512 BF16",
    "AVX512_CORE_AMX": "AMX",
    "AVX512_CORE_AMX_FP16": "AMX",
    "AVX10_1_512_AMX": "AMX",
    "AVX10_1_512_AMX_FP16": "AMX",
    "ALL": "AMX",
    "DEFAULT": "AMX",
}
# torch.backends.cpu.get_cpu_capability() -> the highest CPU kind ATen's kernels use.
ATEN_CAPS = {"DEFAULT": "baseline", "NO AVX": "baseline", "AVX2": "AVX2", "AVX512": "AMX"}


@dataclass(frozen=True)
class DeviceCapabilities:
    """The facts about one training device that decide the fast mode."""

    kind: str
    """``cpu`` or ``cuda``."""
    name: str
    """The CPU's model name or the GPU's name."""
    cpu_isa: str
    """The host CPU's kind as torch uses it: one of ``CPU_ISAS``."""
    cuda_capability: tuple[int, int] | None = None
    """The GPU's compute capability (8.0 and later compute bf16 natively)."""

    @property
    def native_bf16(self) -> bool:
        if self.kind == "cuda":
            return self.cuda_capability is not None and self.cuda_capability >= (8, 0)
        return self.cpu_isa in NATIVE_BF16_ISAS

    @property
    def label(self) -> str:
        """One line for a table cell or a terminal: ``cpu AMX (Intel Xeon ...)``."""
        if self.kind == "cuda" and self.cuda_capability is not None:
            major, minor = self.cuda_capability
            return f"cuda sm_{major}{minor} ({self.name}); host cpu {self.cpu_isa}"
        return f"cpu {self.cpu_isa} ({self.name})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "native_bf16": self.native_bf16, "label": self.label}


def cpu_kind(flags: set[str], aten: str = "AVX512", onednn: str | None = None) -> str:
    """The CPU kind from its ``/proc/cpuinfo`` flags, capped by what torch's kernels may use
    (``aten``: ``torch.backends.cpu.get_cpu_capability()``; ``onednn``: ``ONEDNN_MAX_CPU_ISA``)."""
    if {"amx_bf16", "amx_tile"} <= flags:
        found = "AMX"
    elif "avx512_bf16" in flags:
        found = "AVX-512 BF16"
    elif "avx512f" in flags:
        found = "AVX-512"
    elif "avx2" in flags:
        found = "AVX2"
    else:
        found = "baseline"
    caps = [ATEN_CAPS.get(aten.upper(), "AMX")]
    if onednn:
        caps.append(ONEDNN_CAPS.get(onednn.strip().upper(), "AMX"))
    return min([found, *caps], key=CPU_ISAS.index)


def _cpuinfo() -> tuple[str, set[str]]:
    """The CPU's model name and flags (Linux); elsewhere the platform's name and no flags."""
    name, flags = None, set()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and name is None:
            name = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return name or platform.processor() or platform.machine() or "cpu", flags


def host_cpu_kind() -> tuple[str, str]:
    """(model name, kind) of this machine's CPU as torch uses it."""
    name, flags = _cpuinfo()
    if not flags:  # not Linux: trust torch's own dispatch level, and assume no native bf16
        aten = torch.backends.cpu.get_cpu_capability()
        return name, "AVX-512" if aten == "AVX512" else ATEN_CAPS.get(aten, "baseline")
    aten = torch.backends.cpu.get_cpu_capability()
    return name, cpu_kind(flags, aten, os.environ.get("ONEDNN_MAX_CPU_ISA"))


def detect(device: torch.device) -> DeviceCapabilities:
    """The capabilities of ``device`` on this machine."""
    name, kind = host_cpu_kind()
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return DeviceCapabilities(
            "cuda",
            torch.cuda.get_device_name(index),
            kind,
            tuple(torch.cuda.get_device_capability(index)),
        )
    return DeviceCapabilities("cpu", name, kind)


def resolve_amp(amp: str, capabilities: DeviceCapabilities) -> str:
    """``auto`` -> ``bf16`` where the device computes bf16 natively, ``fp16`` on a CUDA card
    without it (fp16 tensor cores, with the gradient scaler), ``none`` (fp32) elsewhere. Any
    other value is kept: an explicit choice is the user's."""
    if amp != "auto":
        return amp
    if capabilities.native_bf16:
        return "bf16"
    if capabilities.kind == "cuda" and capabilities.cuda_capability >= (7, 0):
        return "fp16"
    return "none"
