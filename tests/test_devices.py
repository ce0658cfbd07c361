"""`amp: auto` chooses per device: bf16 only where the device computes it natively."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

import adaptseg.devices as devices
from adaptseg.devices import DeviceCapabilities, cpu_kind, resolve_amp
from adaptseg.trainer import Trainer

AVX2_ONLY = {"sse4_2", "avx", "avx2", "fma"}  # a 2-core AMD EPYC, most laptops
AVX512 = AVX2_ONLY | {"avx512f", "avx512bw", "avx512vl"}  # Skylake-SP: no bf16
AVX512_BF16 = AVX512 | {"avx512_bf16"}  # Cooper Lake, Zen 4
AMX = AVX512_BF16 | {"amx_bf16", "amx_tile", "amx_int8"}  # Sapphire Rapids


@pytest.mark.parametrize(
    ("flags", "kind", "amp"),
    [
        (set(), "baseline", "none"),
        (AVX2_ONLY, "AVX2", "none"),
        (AVX512, "AVX-512", "none"),
        (AVX512_BF16, "AVX-512 BF16", "bf16"),
        (AMX, "AMX", "bf16"),
    ],
)
def test_a_cpu_gets_bf16_only_where_it_computes_it_natively(flags, kind, amp):
    found = cpu_kind(flags)
    assert found == kind
    assert resolve_amp("auto", DeviceCapabilities("cpu", "test cpu", found)) == amp


@pytest.mark.parametrize(
    ("capability", "amp"),
    [((6, 1), "none"), ((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")],
    ids=["pascal", "volta", "turing", "ampere", "hopper"],
)
def test_a_cuda_card_gets_bf16_where_native_else_fp16_with_tensor_cores(capability, amp):
    card = DeviceCapabilities("cuda", "test card", "AVX2", capability)
    assert resolve_amp("auto", card) == amp


def test_an_explicit_amp_is_the_users_choice_on_any_device():
    avx2 = DeviceCapabilities("cpu", "test cpu", "AVX2")
    assert resolve_amp("bf16", avx2) == "bf16"
    assert resolve_amp("none", DeviceCapabilities("cpu", "test cpu", "AMX")) == "none"


@pytest.mark.parametrize(
    ("aten", "onednn", "kind"),
    [
        ("AVX512", None, "AMX"),
        ("AVX2", None, "AVX2"),  # ATEN_CPU_CAPABILITY=avx2
        ("AVX512", "AVX2", "AVX2"),  # ONEDNN_MAX_CPU_ISA=AVX2
        ("AVX512", "avx512_core", "AVX-512"),
        ("AVX512", "AVX512_CORE_BF16", "AVX-512 BF16"),
        ("DEFAULT", None, "baseline"),
    ],
)
def test_an_amx_cpu_capped_by_torch_settings_counts_as_what_torch_may_use(aten, onednn, kind):
    assert cpu_kind(AMX, aten, onednn) == kind


def test_a_capped_cpu_is_never_promoted():
    assert cpu_kind(AVX2_ONLY, "AVX512", "ALL") == "AVX2"


@pytest.mark.parametrize(("flags", "used"), [(AVX2_ONLY, "none"), (AMX, "bf16")])
def test_the_trainer_resolves_auto_on_its_own_machine_and_trains(monkeypatch, flags, used):
    monkeypatch.setattr(devices, "_cpuinfo", lambda: ("mocked cpu", flags))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    from conftest import tiny_data

    source, target, evals = tiny_data()
    trainer = Trainer(tiny_config(amp="auto", num_steps=2, eval_every=1), source, target, evals)
    assert trainer.amp == used
    assert trainer.capabilities.name == "mocked cpu"
    losses = trainer.step()
    assert all(torch.isfinite(torch.tensor(value)) for value in losses.values())
    assert trainer.state_dict()["config"]["amp"] == "auto"  # the config keeps what was asked
