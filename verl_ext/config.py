"""The `domain:` config namespace of Domain-Aware GRPO: one frozen dataclass per feature, validated at start-up.

verl's `AlgoConfig` is a strict dataclass (unknown keys under `algorithm` fail), so the method's options live in their
own top-level namespace. `recipe/domain_grpo/config/domain_grpo_trainer.yaml` mirrors these dataclasses key by key.

    domain:
      constraint: {enable, weight, divergence, estimator, target, scope, loss_agg_mode, chunk_tokens}  # DC (3)
                  (+ detach_transformed, a deprecated alias of target=transformed)
      shaping:    {enable, divergence, estimator, level, scope, base_estimator}                        # DR (5)
      transforms: {names, mode, seed, modules, params}
      validation: {enable, max_rows}          # invariance metrics in verl's validation (val-domain/...)

Errors name the key and say what to change.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from verl_ext.config_values import check_field_values
from verl_ext.transforms import check_transform_names, get_transform, import_transform_modules

DIVERGENCES = ("kl", "js")
# "full": the whole next-token distribution (default); "k1"/"k2"/"k3": verl's sampled-token estimators (`kl_penalty`)
# on the log-probs of o_i.
ESTIMATORS = ("full", "k1", "k2", "k3")
# k1 = log p − log q is unbounded below: minimising it as a loss lowers the transformed view's likelihood of the
# response instead of aligning the views, so the DC term refuses it (D_i may use it: it is only measured, then
# clamped to [0, 1]).
CONSTRAINT_ESTIMATORS = ("full", "k2", "k3")
TRANSFORM_MODES = ("sample", "fixed", "mixture")
# which tokens the terms see: every response token, or those inside the answer tags (domain_loss.answer_span)
SCOPES = ("response", "answer")
# DC gradient: both views | only the transformed view learns (π on x detached) | only the original (π^D detached)
CONSTRAINT_TARGETS = ("both", "original", "transformed")
# D_i: mean per-token divergence (token) | f(r) of the sampled response's likelihood ratio (sequence)
CONSISTENCY_LEVELS = ("token", "sequence")
# verl estimators that cannot be DR's base: they need inputs verl's compute_advantage hands only to them by name
# (a critic's values, GDPO's reward components, OTB's sum_pi_squared), or they are domain_grpo itself.
INVALID_BASE_ESTIMATORS = ("gae", "gdpo", "optimal_token_baseline", "tir_optimal_token_baseline", "domain_grpo")
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
        estimator: "full" vocabulary distributions (default) or the sampled-token "k2"/"k3" estimate (verl's
            `kl_penalty`; "k1" is refused: unbounded below, minimising it lowers π^D(o) instead of aligning the views).
        target: which view learns: "both" (default; the paper's π^D_θ shares θ), "original" (π on x detached: the
            transformed view is pulled toward the original) or "transformed" (π^D detached, a target; cheaper).
        scope: "response" (every response token, default) or "answer" (only the tokens inside the answer tags; a
            response without a well-formed answer adds nothing).
        detach_transformed: deprecated alias: true means `target=transformed` (refused with another target).
        loss_agg_mode: aggregation as verl's `agg_loss`; None uses the actor's `loss_agg_mode`.
        chunk_tokens: tokens per chunk of the full-vocabulary divergence; None sizes chunks to ~2^25 elements.
    """

    enable: bool = True
    weight: float = 1.0
    divergence: str = "kl"
    estimator: str = "full"
    target: str = "both"
    scope: str = "response"
    detach_transformed: bool = False
    loss_agg_mode: str | None = None
    chunk_tokens: int | None = None

    def __post_init__(self) -> None:
        check_field_values(self, "domain.constraint", DomainConfigError)
        _check_choice("constraint.divergence", self.divergence, DIVERGENCES)
        if self.estimator == "k1":
            raise DomainConfigError(
                "domain.constraint.estimator=k1 is unbounded below (log π^D − log π): minimising it lowers the "
                "transformed view's likelihood of the response instead of aligning the views; use k3 (or k2, or full)"
            )
        _check_choice("constraint.estimator", self.estimator, CONSTRAINT_ESTIMATORS)
        if self.estimator != "full" and self.divergence != "kl":
            raise DomainConfigError(
                f"domain.constraint.estimator={self.estimator} estimates a KL; set domain.constraint.divergence=kl"
            )
        if not self.weight >= 0:
            raise DomainConfigError(f"domain.constraint.weight={self.weight} must be >= 0 (0 disables the term)")
        _check_choice("constraint.target", self.target, CONSTRAINT_TARGETS)
        _check_choice("constraint.scope", self.scope, SCOPES)
        if self.detach_transformed is True:  # the deprecated alias
            if self.target not in ("both", "transformed"):
                raise DomainConfigError(
                    f"domain.constraint.detach_transformed=true (deprecated: = target=transformed) contradicts "
                    f"domain.constraint.target={self.target}; drop detach_transformed"
                )
            object.__setattr__(self, "target", "transformed")
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
        estimator: "full" vocabulary distributions (default) or the sampled-token "k1"/"k2"/"k3" estimate, mapped to
            [0, 1] as clamp(·, 0, 1).
        level: "token" (default): D_i = mean per-token divergence over the scope; "sequence": D_i = min(f(r_i), 1),
            r_i = π^D(o_i)/π(o_i) over the scope's sampled tokens, f the JS integrand (E[f(r)] = the sequence-level
            JS); needs divergence=js and estimator=full.
        scope: "response" (default) or "answer" (only the tokens inside the answer tags; a response without a
            well-formed answer gets D_i = 0, i.e. its advantage unshaped).
        base_estimator: the verl outcome estimator whose advantages A_i are shaped: "grpo" (the paper's, default),
            or any other registered one ("rloo", "reinforce_plus_plus", "opo", ...); checked against verl's registry
            at start-up. With shaping off, domain_grpo equals this estimator bit for bit.
    """

    enable: bool = True
    divergence: str = "js"
    estimator: str = "full"
    level: str = "token"
    scope: str = "response"
    base_estimator: str = "grpo"

    def __post_init__(self) -> None:
        check_field_values(self, "domain.shaping", DomainConfigError)
        _check_choice("shaping.divergence", self.divergence, DIVERGENCES)
        _check_choice("shaping.estimator", self.estimator, ESTIMATORS)
        _check_choice("shaping.level", self.level, CONSISTENCY_LEVELS)
        _check_choice("shaping.scope", self.scope, SCOPES)
        if self.level == "sequence" and (self.divergence, self.estimator) != ("js", "full"):
            raise DomainConfigError(
                "domain.shaping.level=sequence scores the sampled response with the JS integrand f(r): set "
                "domain.shaping.divergence=js and domain.shaping.estimator=full "
                f"(got {self.divergence}, {self.estimator})"
            )
        if not isinstance(self.base_estimator, str) or self.base_estimator in INVALID_BASE_ESTIMATORS:
            raise DomainConfigError(
                f"domain.shaping.base_estimator={self.base_estimator!r} cannot be shaped (it needs inputs verl hands "
                "only to it, or it is domain_grpo); choose an outcome estimator such as grpo, rloo, reinforce_plus_plus"
            )
        if self.estimator != "full" and self.divergence != "kl":
            raise DomainConfigError(
                f"domain.shaping.estimator={self.estimator} estimates a KL; set domain.shaping.divergence=kl"
            )


@dataclass(frozen=True)
class DomainTransformsConfig:
    """Which transform T gives the second view of each sample.

    Attributes:
        names: the transforms to use; each must be in every training row's whitelist (`extra_info.transforms`),
            checked at start-up.
        mode: "sample" one transform per sample and step, drawn uniformly (default); "fixed" always names[0];
            "mixture" averages the divergence over every allowed transform (one extra forward each).
        seed: seed of the per-step draw (and of a stochastic transform's parameters).
        modules: modules that register more transforms (`verl_ext.transforms.register_transform`); imported by every
            process that parses this config, before `names` are checked.
        params: per-transform parameters, `{name: {param: value}}` (e.g. `{hed_jitter: {sigma: 0.1}}`), checked
            against the transform's function signature.
    """

    names: tuple[str, ...] = ("rot90", "rot180", "rot270")
    mode: str = "sample"
    seed: int = 0
    modules: tuple[str, ...] = ()
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_field_values(self, "domain.transforms", DomainConfigError)
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "modules", tuple(self.modules))
        object.__setattr__(self, "params", {str(k): dict(v or {}) for k, v in dict(self.params or {}).items()})
        try:
            import_transform_modules(self.modules, "domain.transforms.modules")
            check_transform_names(self.names, "domain.transforms.names")
            check_transform_names(list(self.params), "domain.transforms.params")
        except ValueError as err:
            raise DomainConfigError(str(err)) from None
        for name, values in self.params.items():
            accepted = set(inspect.signature(get_transform(name).fn).parameters) - {"image", "generator"}
            unknown = sorted(set(values) - accepted)
            if unknown:
                raise DomainConfigError(
                    f"domain.transforms.params.{name}: unknown parameter(s) {unknown}; {name} takes {sorted(accepted)}"
                )
        _check_choice("transforms.mode", self.mode, TRANSFORM_MODES)
        if self.mode == "fixed" and len(self.names) != 1:
            raise DomainConfigError(f"domain.transforms.mode=fixed needs exactly one name; got {list(self.names)}")


@dataclass(frozen=True)
class DomainValidationConfig:
    """Invariance inside verl's validation (`recipe/domain_grpo/validation.py`, metrics `val-domain/...`).

    Attributes:
        enable: after verl's validation, answer the first `max_rows` validation rows under every transform of
            `domain.transforms.names` and log accuracy per view, agreement with the original and the views' mean
            JS divergence per data source (needs `trainer.v1.trainer_mode=domain_grpo`, with any estimator).
        max_rows: validation rows used (each costs one generation per view and one actor pass per transform).
    """

    enable: bool = True
    max_rows: int = 64

    def __post_init__(self) -> None:
        check_field_values(self, "domain.validation", DomainConfigError)
        if isinstance(self.max_rows, bool) or not isinstance(self.max_rows, int) or self.max_rows < 1:
            raise DomainConfigError(f"domain.validation.max_rows={self.max_rows!r} must be an integer >= 1")


@dataclass(frozen=True)
class DomainConfig:
    """Everything Domain-Aware GRPO adds to verl, under the top-level `domain:` key."""

    constraint: DomainConstraintConfig = field(default_factory=DomainConstraintConfig)
    shaping: DomainShapingConfig = field(default_factory=DomainShapingConfig)
    transforms: DomainTransformsConfig = field(default_factory=DomainTransformsConfig)
    validation: DomainValidationConfig = field(default_factory=DomainValidationConfig)

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
        sections["validation"] = DomainValidationConfig
        _reject_unknown("domain", cfg, sections)
        kwargs = {}
        for name, section_cls in sections.items():
            section = dict(cfg.get(name) or {})
            _reject_unknown(f"domain.{name}", section, {f.name: None for f in dataclasses.fields(section_cls)})
            if name == "transforms":
                for key in ("names", "modules"):
                    if key in section:
                        section[key] = tuple(section[key])
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

    The transform checks run whenever a transformed view is needed (DC or DR on), whatever the estimator: `grpo`
    with `domain.constraint.enable=true` builds the same view as `domain_grpo`.

    Args:
        domain: the parsed `domain:` section.
        adv_estimator: `algorithm.adv_estimator`.
        rollout_n: `actor_rollout_ref.rollout.n`, the group size G.
        row_whitelists: each training row's `extra_info["transforms"]`, to refuse a transform outside them.
    """
    if adv_estimator != "domain_grpo" and domain.shaping.enable:
        raise DomainConfigError(
            f"domain.shaping.enable=true needs algorithm.adv_estimator=domain_grpo (got {adv_estimator!r}); "
            "set domain.shaping.enable=false to keep another estimator"
        )
    if adv_estimator != "domain_grpo" and domain.shaping.base_estimator != "grpo":
        raise DomainConfigError(
            f"domain.shaping.base_estimator={domain.shaping.base_estimator!r} is read by "
            f"algorithm.adv_estimator=domain_grpo only (got {adv_estimator!r}); set "
            f"algorithm.adv_estimator={domain.shaping.base_estimator} and drop the key, or use domain_grpo"
        )
    if adv_estimator == "domain_grpo" and rollout_n < 2:
        raise DomainConfigError(
            f"algorithm.adv_estimator=domain_grpo is group-relative: set actor_rollout_ref.rollout.n >= 2 "
            f"(got {rollout_n})"
        )
    if not domain.needs_transformed_view:
        return
    if not [n for n in domain.transforms.names if n != "identity"]:
        raise DomainConfigError(
            "the domain terms (DC/DR) need at least one non-identity transform in "
            f"domain.transforms.names (got {list(domain.transforms.names)}); e.g. [rot90,rot180,rot270] or [vflip]"
        )
    for i, allowed in enumerate(row_whitelists or []):
        check_transform_names(list(allowed), f"training row {i} extra_info.transforms")
        if not [n for n in allowed if n != "identity"]:
            raise DomainConfigError(
                f"training row {i} allows no transform (extra_info.transforms={sorted(allowed)}): its label is not "
                "invariant under any transform (e.g. a jigsaw puzzle, where a rotation changes the answer), so the "
                "domain terms cannot be used on it; switch them off (method=grpo) or drop these rows"
            )
        refused = sorted(set(domain.transforms.names) - set(allowed))
        if refused:
            raise DomainConfigError(
                f"domain.transforms.names={list(domain.transforms.names)} includes {refused}, which training row {i} "
                f"does not allow (its label-preserving whitelist: {sorted(allowed)}); use only transforms every "
                "training row allows (see data_prep/README.md for each dataset's whitelist)"
            )
