"""The CPU plugins as verl sees them: loaded through VERL_USE_EXTERNAL_MODULES in a fresh process (~15 s).

A subprocess because verl resolves its platform once per process; the pytest process must keep its own.
The in-process tests below only touch objects, not verl's global platform.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types

import pytest
import torch

from verl_ext.cpu.platform import CpuDeviceModule, PlatformCPU, patch_process_group_backend

PROBE = textwrap.dedent(
    """
    import json, os
    import torch
    import verl
    from verl.plugin.platform import get_platform
    from verl.utils.device import get_device_id, get_device_name, get_nccl_backend, get_torch_device
    from verl.utils.distributed import initialize_global_process_group_ray
    from verl.workers.engine import EngineRegistry
    from verl.workers.rollout.base import get_rollout_class
    from verl.workers.rollout.replica import get_rollout_replica_class

    initialize_global_process_group_ray()
    tensor = torch.ones(3)
    torch.distributed.all_reduce(tensor)
    print(json.dumps({
        "platform": type(get_platform()).__name__,
        "device": get_device_name(),
        "device_id": str(torch.zeros(1).to(get_device_id()).device),
        "backend": get_nccl_backend(),
        "pg_backend": torch.distributed.get_backend(),
        "all_reduce": tensor.tolist(),
        "memory_allocated": get_torch_device().memory_allocated(),
        "lm_engine": EngineRegistry.get_engine_cls("language_model", "fsdp2").__name__,
        "value_engine": EngineRegistry.get_engine_cls("value_model", "fsdp").__name__,
        "rollout": get_rollout_class("hf", "async").__name__,
        "replica": get_rollout_replica_class("hf").__name__,
        "vllm_still_registered": get_rollout_class.__globals__["_ROLLOUT_REGISTRY"][("vllm", "async")],
    }))
    torch.distributed.destroy_process_group()
    """
)


def test_plugins_reach_verl_through_external_modules() -> None:
    env = dict(
        os.environ,
        VERL_PLATFORM="cpu",
        VERL_USE_EXTERNAL_MODULES="verl_ext.cpu",
        RANK="0",
        WORLD_SIZE="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(29000 + os.getpid() % 1000),
    )
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    probe = json.loads(proc.stdout.strip().splitlines()[-1])
    assert probe["platform"] == "PlatformCPU"
    assert (probe["device"], probe["device_id"], probe["backend"], probe["pg_backend"]) == (
        "cpu",
        "cpu",
        "gloo",
        "gloo",
    )
    assert probe["all_reduce"] == [1.0, 1.0, 1.0]
    assert probe["memory_allocated"] == 0
    assert (probe["lm_engine"], probe["value_engine"]) == ("FSDPEngineWithLMHead", "FSDPEngineWithValueHead")
    assert (probe["rollout"], probe["replica"]) == ("HFServerAdapter", "HFReplica")
    assert probe["vllm_still_registered"].endswith("ServerAdapter")


def test_device_module_shims() -> None:
    device = CpuDeviceModule()
    free, total = device.mem_get_info()
    assert 0 < free <= total
    assert device.max_memory_allocated() == 0 and device.memory_reserved() == 0
    assert device.empty_cache() is None and device.ipc_collect() is None
    assert device.synchronize is torch.cpu.synchronize
    assert device.current_device() == torch.device("cpu")
    state = device.get_rng_state()
    first = torch.rand(2)
    device.set_rng_state(state)
    assert torch.equal(first, torch.rand(2))
    with pytest.raises(AttributeError):
        device.no_such_cuda_call()  # noqa: B018


def test_platform_is_only_selected_explicitly() -> None:
    platform = PlatformCPU()
    assert not platform.is_platform_available(use_smi_check=True)
    assert platform.is_available()
    assert platform.ray_resource_options(1) == {"num_gpus": 1}
    assert platform.communication_backend_name() == "gloo"


@pytest.mark.parametrize(("device", "expected"), [("cpu", "gloo"), ("cuda", None)])
def test_process_group_backend_is_gloo_on_cpu_only(
    monkeypatch: pytest.MonkeyPatch, device: str, expected: str | None
) -> None:
    calls = []
    module = types.SimpleNamespace(
        initialize_global_process_group_ray=lambda timeout_second=None, backend=None: calls.append(backend),
        initialize_global_process_group=lambda timeout_second=36000: calls.append("torchrun"),
    )
    monkeypatch.setattr("verl.utils.device.get_device_name", lambda: device)
    patch_process_group_backend(module)
    patch_process_group_backend(module)  # idempotent: wrapped once
    module.initialize_global_process_group_ray()
    module.initialize_global_process_group_ray(backend="nccl")
    assert calls == [expected, "nccl"]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchrun_process_group_is_gloo_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """verl's SFT trainer initialises through `initialize_global_process_group` (backend "cpu:gloo,cpu:gloo" on CPU,
    which torch rejects); the wrapper inits plain gloo on the cpu platform and hands the original through elsewhere."""
    import torch.distributed

    calls = []
    module = types.SimpleNamespace(
        initialize_global_process_group_ray=lambda timeout_second=None, backend=None: None,
        initialize_global_process_group=lambda timeout_second=36000: calls.append("original") or (0, 0, 1),
    )
    patch_process_group_backend(module)
    monkeypatch.setattr("verl.utils.device.get_device_name", lambda: "cuda")
    assert module.initialize_global_process_group() == (0, 0, 1)
    assert calls == ["original"]
    monkeypatch.setattr("verl.utils.device.get_device_name", lambda: "cpu")
    port = _free_port()
    monkeypatch.delenv("DIST_INIT_METHOD", raising=False)  # torchrun's env:// rendezvous
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        assert module.initialize_global_process_group() == (0, 0, 1)
        assert torch.distributed.get_backend() == "gloo"
    finally:
        torch.distributed.destroy_process_group()
    assert calls == ["original"]
