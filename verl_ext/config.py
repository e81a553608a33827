"""The `domain:` config namespace of Domain-Aware GRPO: one frozen dataclass per feature, validated at start-up.

verl's `AlgoConfig` is a strict dataclass (unknown keys under `algorithm` fail), so the method's options live in their
own top-level namespace. `recipe/domain_grpo/config/domain_grpo_trainer.yaml` mirrors these dataclasses key by key.

    domain:
      constraint: {enable, weight, divergence, estimator, detach_transformed, loss_agg_mode, chunk_tokens}  # DC (3)
      shaping:    {enable, divergence, estimator}                                                           # DR (5)
      transforms: {names, mode, seed}

Errors name the key and say what to change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from verl_ext.transforms import check_transform_names

DIVERGENCES = ("kl", "js")
# "full": the whole next-token distribution (default); "k1"/"k3": verl's sampled-token estimators on log-probs of o_i.
ESTIMATORS = ("full", "k1", "k3")
TRANSFORM_MODES = ("sample", "fixed", "mixture")
LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm", "token-sum")


class DomainConfigError(ValueError):
    """A `domain.*` setting is invalid; the message names the key and what to change."""


def _check_choice(key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise DomainConfigError(f"domain.{key}={value!r} is not valid; choose one of {list(choices)}")


@dataclass(frozen=True)
class DomainConstraintConfig:
    """DC, eq. (3): the actor's extra loss λ · D(π^D_θ ‖ π_θ) on the transformed view, same response tokens.

    Attributes:
        enable: add the term to the actor loss.
        weight: λ ≥ 0 (the paper uses 1: L_DA = ... − L_dom). 0 gives plain GRPO's loss.
        divergence: "kl" (paper) or "js" (Table 8 ablation).
        estimator: "full" vocabulary distributions (default) or the sampled-token "k1"/"k3" estimate.
        detach_transformed: stop the gradient through π^D (the transformed view is a target); cheaper.
        loss_agg_mode: aggregation as verl's `agg_loss`; None uses the actor's `loss_agg_mode`.
        chunk_tokens: tokens per chunk of the full-vocabulary divergence; None sizes chunks to ~2^25 elements.
    """

    enable: bool = True
    weight: float = 1.0
    divergence: str = "kl"
    estimator: str = "full"
    detach_transformed: bool = False
    loss_agg_mode: str | None = None
    chunk_tokens: int | None = None

    def __post_init__(self) -> None:
        _check_choice("constraint.divergence", self.divergence, DIVERGENCES)
        _check_choice("constraint.estimator", self.estimator, ESTIMATORS)
        if self.estimator != "full" and self.divergence != "kl":
            raise DomainConfigError(
                "domain.constraint.estimator=k1/k3 estimates a KL; set domain.constraint.divergence=kl"
            )
        if not self.weight >= 0:
            raise DomainConfigError(f"domain.constraint.weight={self.weight} must be >= 0 (0 disables the term)")
        if self.loss_agg_mode is not None:
            _check_choice("constraint.loss_agg_mode", self.loss_agg_mode, LOSS_AGG_MODES)
        if self.chunk_tokens is not None and self.chunk_tokens < 1:
            raise DomainConfigError(f"domain.constraint.chunk_tokens={self.chunk_tokens} must be >= 1 or null")

    @property
    def active(self) -> bool:
        """The term changes the loss: enabled with a positive weight."""
        return self.enable and self.weight > 0


@dataclass(frozen=True)
class DomainShapingConfig:
    """DR, eq. (5): A_i^d = (1 − D_i) · A_i with D_i the sample's mean per-token divergence between the views.

    Attributes:
        enable: scale the advantages; off gives GRPO's advantages.
        divergence: "js" (paper; bounded in [0, 1]) or "kl" (ablation; mapped to [0, 1] as min(KL, 1)).
        estimator: "full" vocabulary distributions (default) or the sampled-token "k1"/"k3" estimate (min(·, 1)).
    """

    enable: bool = True
    divergence: str = "js"
    estimator: str = "full"

    def __post_init__(self) -> None:
        _check_choice("shaping.divergence", self.divergence, DIVERGENCES)
        _check_choice("shaping.estimator", self.estimator, ESTIMATORS)
        if self.estimator != "full" and self.divergence != "kl":
            raise DomainConfigError("domain.shaping.estimator=k1/k3 estimates a KL; set domain.shaping.divergence=kl")


@dataclass(frozen=True)
class DomainTransformsConfig:
    """Which transform T gives the second view of each sample.

    Attributes:
        names: the transforms to use; each must be in every training row's whitelist (`extra_info.transforms`),
            checked at start-up.
        mode: "sample" one transform per sample and step, drawn uniformly (default); "fixed" always names[0];
            "mixture" averages the divergence over every allowed transform (one extra forward each).
        seed: seed of the per-step draw.
    """

    names: tuple[str, ...] = ("rot90", "rot180", "rot270")
    mode: str = "sample"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))
        try:
            check_transform_names(self.names, "domain.transforms.names")
        except ValueError as err:
            raise DomainConfigError(str(err)) from None
        _check_choice("transforms.mode", self.mode, TRANSFORM_MODES)
        if self.mode == "fixed" and len(self.names) != 1:
            raise DomainConfigError(f"domain.transforms.mode=fixed needs exactly one name; got {list(self.names)}")


@dataclass(frozen=True)
class DomainConfig:
    """Everything Domain-Aware GRPO adds to verl, under the top-level `domain:` key."""

    constraint: DomainConstraintConfig = field(default_factory=DomainConstraintConfig)
    shaping: DomainShapingConfig = field(default_factory=DomainShapingConfig)
    transforms: DomainTransformsConfig = field(default_factory=DomainTransformsConfig)

    @property
    def needs_transformed_view(self) -> bool:
        """A second (transformed) forward pass is needed at all."""
        return self.constraint.active or self.shaping.enable

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> DomainConfig:
        """Build from a plain mapping (e.g. `OmegaConf.to_container(config.domain)`), rejecting unknown keys."""
        cfg = dict(cfg or {})
        sections = {"constraint": DomainConstraintConfig, "shaping": DomainShapingConfig}
        sections["transforms"] = DomainTransformsConfig
        _reject_unknown("domain", cfg, sections)
        kwargs = {}
        for name, section_cls in sections.items():
            section = dict(cfg.get(name) or {})
            _reject_unknown(f"domain.{name}", section, {f.name: None for f in dataclasses.fields(section_cls)})
            if name == "transforms" and "names" in section:
                section["names"] = tuple(section["names"])
            kwargs[name] = section_cls(**section)
        return cls(**kwargs)


def _reject_unknown(where: str, given: Mapping[str, Any], known: Mapping[str, Any]) -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise DomainConfigError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(known)}")


def validate_for_training(
    domain: DomainConfig, adv_estimator: str, rollout_n: int, row_whitelists: list[list[str]] | None = None
) -> None:
    """Start-up checks that need the rest of the run's config (and optionally the training rows' whitelists).

    Args:
        domain: the parsed `domain:` section.
        adv_estimator: `algorithm.adv_estimator`.
        rollout_n: `actor_rollout_ref.rollout.n`, the group size G.
        row_whitelists: each training row's `extra_info["transforms"]`, to refuse a transform outside them.
    """
    if adv_estimator != "domain_grpo":
        if domain.shaping.enable:
            raise DomainConfigError(
                f"domain.shaping.enable=true needs algorithm.adv_estimator=domain_grpo (got {adv_estimator!r}); "
                "set domain.shaping.enable=false to keep another estimator"
            )
        return
    if rollout_n < 2:
        raise DomainConfigError(
            f"algorithm.adv_estimator=domain_grpo is group-relative: set actor_rollout_ref.rollout.n >= 2 "
            f"(got {rollout_n})"
        )
    if domain.needs_transformed_view and not [n for n in domain.transforms.names if n != "identity"]:
        raise DomainConfigError(
            "domain_grpo with the domain terms on needs at least one non-identity transform in "
            f"domain.transforms.names (got {list(domain.transforms.names)}); e.g. [rot90,rot180,rot270] or [vflip]"
        )
    if row_whitelists is None or not domain.needs_transformed_view:
        return
    for i, allowed in enumerate(row_whitelists):
        check_transform_names(list(allowed), f"training row {i} extra_info.transforms")
        if not allowed:  # e.g. jigsaw rows (data_prep jigsaw): a rotation or flip changes the answer
            raise DomainConfigError(
                f"training row {i} allows no transform (its extra_info.transforms is empty, as for jigsaw puzzles, "
                "whose answer any rotation or flip changes): Domain-Aware GRPO needs a label-preserving view; "
                "train these rows with method=grpo"
            )
        refused = sorted(set(domain.transforms.names) - set(allowed))
        if refused:
            raise DomainConfigError(
                f"domain.transforms.names={list(domain.transforms.names)} includes {refused}, which training row {i} "
                f"does not allow (its label-preserving whitelist: {sorted(allowed)}); use only transforms every "
                "training row allows (see data_prep/README.md for each dataset's whitelist)"
            )
