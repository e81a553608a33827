"""CPU stand-ins that let verl 0.9.1's own GRPO loop run on a CPU-only machine (tests and the demo only).

Importing this package registers, through verl's own registries, and only at the moment verl imports the module that
owns each registry (``verl_ext.import_hooks.when_imported``), so this ``__init__`` stays light (no verl import):

* platform ``cpu`` in ``PlatformRegistry`` (``platform.PlatformCPU``), selected by ``VERL_PLATFORM=cpu``;
* verl's FSDP engines under the ``cpu`` device key of ``EngineRegistry`` (and the reference model's FSDP2 offload policy
  without pinned memory);
* a gloo default for ``initialize_global_process_group_ray`` on the cpu platform (verl's default backend string is
  invalid there; unchanged on every other platform);
* rollout ``hf`` (transformers ``generate``) in ``_ROLLOUT_REGISTRY`` and ``RolloutReplicaRegistry``
  (``hf_rollout``), selected by ``actor_rollout_ref.rollout.name=hf``;
* pure-torch flash-attention kernels bound in ``verl.models.transformers.qwen2_vl`` on the cpu platform
  (``varlen_attention``), so verl's remove-padding (packed) path runs with ``use_remove_padding=true``.

Every verl process must import it: set ``VERL_USE_EXTERNAL_MODULES=verl_ext.cpu`` and ``VERL_PLATFORM=cpu`` in the
driver and in ``ray_kwargs.ray_init.runtime_env.env_vars``. ``recipe/domain_grpo/config/stand_in/cpu_tiny.yaml`` does
both: the recipe entry point exports that config's env vars to its own process before verl resolves its platform.
Registering is harmless on a GPU machine: nothing is selected unless those settings ask for it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from verl_ext.import_hooks import when_imported

ROLLOUT_NAME = "hf"
_HF_ROLLOUT = "verl_ext.cpu.hf_rollout"


def _register_platform(_: ModuleType) -> None:
    importlib.import_module("verl_ext.cpu.platform")


def _register_engines(transformer_impl: ModuleType) -> None:
    from verl_ext.cpu.platform import patch_cpu_offload_policy, register_cpu_engines

    register_cpu_engines(transformer_impl)
    patch_cpu_offload_policy(transformer_impl)  # the reference model's offload policy: no pinned memory on CPU


def _patch_process_group(distributed: ModuleType) -> None:
    from verl_ext.cpu.platform import patch_process_group_backend

    patch_process_group_backend(distributed)


def _register_rollout_adapter(base: ModuleType) -> None:
    # A dotted path: verl imports verl_ext.cpu.hf_rollout only when the rollout is actually built.
    base._ROLLOUT_REGISTRY.setdefault((ROLLOUT_NAME, "async"), f"{_HF_ROLLOUT}.HFServerAdapter")


def _register_rollout_replica(replica: ModuleType) -> None:
    replica.RolloutReplicaRegistry.register(ROLLOUT_NAME, lambda: importlib.import_module(_HF_ROLLOUT).HFReplica)


def _bind_flash_attention(qwen2_vl: ModuleType) -> None:
    from verl_ext.cpu.varlen_attention import bind_cpu_flash_attention

    bind_cpu_flash_attention(qwen2_vl)


when_imported("verl.plugin.platform.platform_manager", _register_platform)
when_imported("verl.models.transformers.qwen2_vl", _bind_flash_attention)
when_imported("verl.utils.distributed", _patch_process_group)
when_imported("verl.workers.engine.fsdp.transformer_impl", _register_engines)
when_imported("verl.workers.rollout.base", _register_rollout_adapter)
when_imported("verl.workers.rollout.replica", _register_rollout_replica)
