"""A ``cpu`` device platform for verl 0.9.1 (tests and the CPU demo only; selected with ``VERL_PLATFORM=cpu``).

verl resolves its accelerator through ``verl.plugin.platform.PlatformRegistry``; stock 0.9.1 registers only
nvidia/huawei/amd. This module adds a ``cpu`` platform and the three CPU gaps around it, each through the hook verl
itself uses:

* ``PlatformCPU`` (``PlatformRegistry.register("cpu")``): gloo, ``device_module`` = :class:`CpuDeviceModule`
  (``torch.cpu`` plus memory-stat shims), ``current_device()`` = ``torch.device("cpu")`` (verl passes it to
  ``.to()``, where an integer would mean ``cuda:<i>``), and Ray resource name ``GPU`` (verl's ``ResourcePoolManager``
  counts Ray GPU resources, so a CPU run declares logical GPUs with ``ray_init.num_gpus``; they only drive scheduling).
* ``register_cpu_engines``: verl's own FSDP engines registered under the ``cpu`` device key of ``EngineRegistry``
  (upstream registers them for cuda/npu only).
* ``patch_cpu_offload_policy``: verl gives a forward-only FSDP2 engine (the reference model) a
  ``CPUOffloadPolicy(pin_memory=True)``; pinning needs a CUDA driver, so on the cpu platform the policy is built with
  ``pin_memory=False`` (the weights live in host memory anyway).
* ``patch_process_group_backend``: verl builds the backend string ``"cpu:gloo,{device}:{backend}"``, which is
  ``"cpu:gloo,cpu:gloo"`` on CPU and rejected by torch ("Duplicate device type cpu"); on the cpu platform the wrapper
  passes plain ``"gloo"``. On any other platform it changes nothing.

Nothing here is imported on the GPU path: ``verl_ext.cpu`` installs these lazily (``verl_ext.import_hooks``); only a
process started with ``VERL_PLATFORM=cpu`` ever selects the platform.
"""

from __future__ import annotations

import functools
import logging
import os
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch
from verl.plugin.platform.platform_base import PlatformBase
from verl.plugin.platform.platform_manager import PlatformRegistry

logger = logging.getLogger(__name__)

PLATFORM_NAME = "cpu"
# Memory statistics verl logs as metrics; a CPU has no device allocator, so they read 0.
_ZERO_STATS = ("memory_allocated", "memory_reserved", "max_memory_allocated", "max_memory_reserved")
# Allocator/IPC controls verl calls between phases; nothing to do on a CPU.
_NO_OPS = ("empty_cache", "ipc_collect", "set_per_process_memory_fraction", "reset_peak_memory_stats")


class CpuDeviceModule(ModuleType):
    """Stands in for ``torch.cuda`` as verl's ``get_torch_device()``: ``torch.cpu`` plus the calls it lacks.

    Unknown attributes raise ``AttributeError`` (fail loudly rather than silently returning a dummy).
    """

    def __init__(self) -> None:
        super().__init__("verl_ext_cpu_device")

    @staticmethod
    def mem_get_info(device: Any = None) -> tuple[int, int]:
        """(free, total) host memory in bytes, like ``torch.cuda.mem_get_info``."""
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page

    @staticmethod
    def get_device_name(device: Any = None) -> str:
        return "CPU"

    @staticmethod
    def get_rng_state(device: Any = None) -> torch.Tensor:
        return torch.get_rng_state()

    @staticmethod
    def set_rng_state(state: torch.Tensor, device: Any = None) -> None:
        torch.set_rng_state(state)

    @staticmethod
    def manual_seed(seed: int) -> None:
        torch.manual_seed(seed)

    @staticmethod
    def manual_seed_all(seed: int) -> None:
        torch.manual_seed(seed)

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def current_device() -> torch.device:
        return torch.device("cpu")

    def __getattr__(self, name: str) -> Any:
        if name in _ZERO_STATS:
            return lambda *args, **kwargs: 0
        if name in _NO_OPS:
            return lambda *args, **kwargs: None
        if not name.startswith("__") and hasattr(torch.cpu, name):
            return getattr(torch.cpu, name)
        raise AttributeError(f"CPU device module has no {name!r}")


@PlatformRegistry.register(platform=PLATFORM_NAME)
class PlatformCPU(PlatformBase):
    """verl platform for running the trainer on CPU cores (gloo collectives, no device memory)."""

    _device_module = CpuDeviceModule()

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return self._device_module

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Never auto-detected: only VERL_PLATFORM=cpu selects it.
        return False

    def current_device(self) -> torch.device:  # type: ignore[override]
        return torch.device("cpu")

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        # Ray sets CUDA_VISIBLE_DEVICES for the logical GPUs; harmless on a CPU build.
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


def register_cpu_engines(transformer_impl: ModuleType) -> None:
    """Register verl's own FSDP engines (LM head and value head) under the ``cpu`` device key."""
    from verl.workers.engine.base import EngineRegistry

    for model_type, engine_cls in (
        ("language_model", transformer_impl.FSDPEngineWithLMHead),
        ("value_model", transformer_impl.FSDPEngineWithValueHead),
    ):
        registered = EngineRegistry._engines.get(model_type, {})
        if all(PLATFORM_NAME in registered.get(backend, {}) for backend in ("fsdp", "fsdp2")):
            continue
        EngineRegistry.register(model_type=model_type, backend=["fsdp", "fsdp2"], device=PLATFORM_NAME)(engine_cls)


def patch_cpu_offload_policy(transformer_impl: ModuleType) -> None:
    """On the cpu platform, the FSDP2 engine's ``CPUOffloadPolicy`` without pinned memory (no-op elsewhere)."""
    original = transformer_impl.CPUOffloadPolicy
    if original is None or getattr(original, "_verl_ext_cpu", False):
        return

    def cpu_offload_policy(*args: Any, pin_memory: bool = True, **kwargs: Any) -> Any:
        from verl.utils.device import get_device_name

        if get_device_name() == PLATFORM_NAME:
            pin_memory = False
        return original(*args, pin_memory=pin_memory, **kwargs)

    cpu_offload_policy._verl_ext_cpu = True  # type: ignore[attr-defined]
    transformer_impl.CPUOffloadPolicy = cpu_offload_policy


def patch_process_group_backend(distributed: ModuleType) -> None:
    """On the cpu platform, make verl's two process-group initialisers use plain ``"gloo"``.

    * ``initialize_global_process_group_ray`` (Ray workers): the wrapper passes ``backend="gloo"`` when none is given.
    * ``initialize_global_process_group`` (torchrun entry points, e.g. verl's SFT trainer): it hardcodes the backend
      string, so on the cpu platform the wrapper does what it does with ``"gloo"`` (init, then the ranks from the
      torchrun environment); verl's SFT trainer imports it inside ``main``, after this hook has run.

    Must run before ``verl.workers.engine_workers`` binds the Ray variant by name (it is installed as a post-import
    hook on ``verl.utils.distributed``). A no-op wrapper on every other platform.
    """
    original = distributed.initialize_global_process_group_ray
    if getattr(original, "_verl_ext_cpu", False):
        return

    @functools.wraps(original)
    def initialize_global_process_group_ray(timeout_second: int | None = None, backend: str | None = None) -> None:
        from verl.utils.device import get_device_name

        if backend is None and get_device_name() == PLATFORM_NAME:
            backend = "gloo"
        return original(timeout_second=timeout_second, backend=backend)

    torchrun_original = distributed.initialize_global_process_group

    @functools.wraps(torchrun_original)
    def initialize_global_process_group(timeout_second: int = 36000) -> tuple[int, int, int]:
        from datetime import timedelta

        from verl.utils.device import get_device_name

        if get_device_name() != PLATFORM_NAME:
            return torchrun_original(timeout_second=timeout_second)
        torch.distributed.init_process_group(
            backend="gloo",
            timeout=timedelta(seconds=timeout_second),
            init_method=os.environ.get("DIST_INIT_METHOD", None),
        )
        return int(os.environ["LOCAL_RANK"]), int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])

    initialize_global_process_group_ray._verl_ext_cpu = True  # type: ignore[attr-defined]
    distributed.initialize_global_process_group_ray = initialize_global_process_group_ray
    distributed.initialize_global_process_group = initialize_global_process_group
