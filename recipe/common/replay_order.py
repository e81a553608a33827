"""Training batches in dispatch order (`domain_recipe.deterministic`), for verl 0.9.1's v1 trainers.

verl's `ReplayBuffer` hands the trainer a batch whose samples are in the order their trajectories reached
TransferQueue, i.e. the order in which the asynchronous agent loops happened to finish. With identical samples, two
runs then split the batch into different micro-batches and sum the loss and the gradients in different orders, so
their weights drift apart in the last bits and every metric after them. Under `domain_recipe.deterministic` the
trainer's replay buffer orders each batch as the prompts were dispatched (the dataloader's order, which
TransferQueue's key listing keeps), then by the response of the group (`session_id`), then by turn; which prompts a
batch takes is unchanged (oldest step first), only ties are broken by dispatch order instead of set order.

Applied by `with_dispatch_order(trainer_cls)` (`recipe.common.entry.resolve_trainer_cls`): the trainer's own replay
buffer, built by verl (`_build_replay_buffer`, custom samplers included), gets `DispatchOrder` in front of its class.
"""

from __future__ import annotations

from typing import Any

from transfer_queue import KVBatchMeta
from verl.trainer.ppo.v1 import PPOTrainer


def trajectory_order(key: str, prompt_rank: dict[str, int]) -> tuple[int, int, int]:
    """Sort key of a trajectory `{uid}_{session_id}_{index}` (verl's format): (prompt's rank, session, turn)."""
    uid, session_id, index = key.rsplit("_", 2)
    return prompt_rank[uid], int(session_id), int(index)


class DispatchOrder:
    """Mixin for verl's `ReplayBuffer`/`ReplayBufferAsync`: prompts and trajectories in dispatch order."""

    prompt_global_steps: dict[str, dict[str, int]]
    partitions: dict[str, dict[str, dict]]

    def _select_prompt_uids(
        self, partition_id: str, sampleable_keys: set[str], batch_size: int
    ) -> tuple[list[str], dict[str, dict], dict[str, int]]:
        """verl's choice (oldest step first), over the prompts in dispatch order rather than a set's order."""
        steps = dict(self.prompt_global_steps[partition_id])  # TransferQueue's listing: insertion = dispatch order
        dispatched = [key for key in steps if key in sampleable_keys]
        dispatched += sorted(set(sampleable_keys) - set(dispatched))
        ordered = sorted(dispatched, key=lambda key: steps.get(key, 0))  # stable: dispatch order within a step
        return ordered[:batch_size], dict(self.partitions[partition_id]), steps

    def _materialize_batch(
        self, partition_id: str, selected_prompt_uids: list[str], partition_snapshot: dict[str, dict]
    ) -> KVBatchMeta:
        """verl's batch of the selected prompts' trajectories, sorted by (prompt, session, turn)."""
        batch = super()._materialize_batch(partition_id, selected_prompt_uids, partition_snapshot)  # type: ignore[misc]
        rank = {uid: i for i, uid in enumerate(selected_prompt_uids)}
        order = sorted(range(len(batch.keys)), key=lambda i: trajectory_order(batch.keys[i], rank))
        return KVBatchMeta(
            partition_id=batch.partition_id,
            keys=[batch.keys[i] for i in order],
            tags=[batch.tags[i] for i in order],
        )


def in_dispatch_order(buffer: Any) -> Any:
    """`buffer` (a verl replay buffer) with `DispatchOrder` in front of its class; its state is untouched."""
    cls = type(buffer)
    if not (hasattr(cls, "_select_prompt_uids") and hasattr(cls, "_materialize_batch")):
        raise TypeError(f"domain_recipe.deterministic: {cls.__name__} is not a verl v1 replay buffer")
    if not issubclass(cls, DispatchOrder):
        buffer.__class__ = type(f"DispatchOrder{cls.__name__}", (DispatchOrder, cls), {})
    return buffer


def with_dispatch_order(trainer_cls: type[PPOTrainer]) -> type[PPOTrainer]:
    """A subclass of `trainer_cls` whose replay buffer hands out batches in dispatch order."""

    class TrainerInDispatchOrder(trainer_cls):
        def _build_replay_buffer(self):  # noqa: ANN202 - verl's signature
            return in_dispatch_order(super()._build_replay_buffer())

    TrainerInDispatchOrder.__name__ = TrainerInDispatchOrder.__qualname__ = f"{trainer_cls.__name__}InDispatchOrder"
    return TrainerInDispatchOrder
