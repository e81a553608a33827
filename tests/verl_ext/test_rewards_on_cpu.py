"""Rewards: strict one-class accuracy, whole-response format, multi-label set match / Jaccard, OC agreement."""

from __future__ import annotations

import numpy as np
import pytest

from verl_ext.rewards import (
    compute_score,
    extract_answer,
    format_reward,
    jaccard,
    match_class,
    normalize,
    oc_agreement,
    parse_prediction,
)

UCM = ["agricultural", "baseballdiamond", "beach", "denseresidential", "storagetanks", "tenniscourt"]
ORGAN = ["bladder", "femur-left", "femur-right", "heart", "kidney-left"]
CHEST = ["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "no finding"]


def resp(answer: str, think: str = "looks sandy") -> str:
    return f"<think>{think}</think>\n<answer>{answer}</answer>"


def score(solution: str, gt: str = "beach", vocab=UCM, source: str = "ucm", **kw) -> dict:
    return compute_score(source, solution, gt, {"class_names": vocab, "multi_label": False}, **kw)


def test_correct_answer_scores_acc_plus_format() -> None:
    out = score(resp("beach"))
    # acc 1 * weight 1 + format 1 * weight 1 = 2
    assert out == {"score": 2.0, "acc": 1.0, "format": 1.0, "answer_valid": 1.0}


@pytest.mark.parametrize("answer", ["Beach", " BEACH ", "be_ach", "b-e-a-c-h"])
def test_normalisation_is_case_space_underscore_hyphen_insensitive(answer: str) -> None:
    assert score(resp(answer))["acc"] == 1.0


@pytest.mark.parametrize("answer", ["Dense Residential", "dense_residential", "dense-residential"])
def test_multi_word_class_matches_its_folder_spelling(answer: str) -> None:
    assert score(resp(answer), gt="denseresidential")["acc"] == 1.0


@pytest.mark.parametrize(
    "solution",
    [
        resp(""),  # empty answer
        resp("   "),  # blank answer
        resp("beach or forest"),  # several classes
        resp("beach, denseresidential"),  # several classes, listed
        resp("a sandy beach"),  # label as a substring of a longer string
        resp("beachfront"),  # label as a prefix
        resp("each"),  # a substring of the label
        "<think>x</think> the answer is beach",  # answer outside the tags
        "beach",  # no tags at all
        resp("golfcourse"),  # a class of another dataset (not in this row's vocabulary)
        "<think>x</think><answer>beach</answer><answer>beach</answer>",  # two answer blocks
        "<think>x</think><answer>forest</answer><answer>beach</answer>",  # two blocks, hedged
        "<think>x</think><answer>beach",  # unclosed
        resp("not beach"),  # a negation
        resp("no beach"),  # a negation
        resp("beach (not forest)"),  # a negation after the class: only the outer ")" goes, the rest stays
        resp("- beach\n- forest"),  # a markdown list of two classes
        resp("beach; forest"),  # a list with another separator
        resp('"beach" or "forest"'),  # two quoted classes: inner quotes are not stripped
        resp("."),  # punctuation only: empty after stripping
        resp('""'),  # empty quotes
        resp("**"),  # empty markdown bold
        "<think>x</think><answer>Beach.</answer><answer>beach</answer>",  # two blocks, one with a period
        '<think>x</think><answer>"beach"</answer><answer>"beach"</answer>',  # two quoted blocks
    ],
)
def test_adversarial_answers_get_zero_accuracy(solution: str) -> None:
    out = score(solution)
    assert out["acc"] == 0.0
    assert out["answer_valid"] == 0.0


@pytest.mark.parametrize(
    "answer",
    [
        "Beach.",  # sentence end
        "beach!",
        '"beach"',  # quoted
        "'Beach'",
        "\u201cbeach\u201d",  # typographic quotes
        "\u2018beach\u2019.",
        "`beach`",  # markdown code
        "**Beach**",  # markdown bold
        '"Beach."',  # quote and period
        "(beach)",
        "beach\u3002",  # full-width full stop
        '  "beach" . ',
    ],
)
def test_surrounding_punctuation_and_quotes_are_stripped(answer: str) -> None:
    out = score(resp(answer))
    assert (out["acc"], out["answer_valid"]) == (1.0, 1.0)


def test_inner_punctuation_is_kept_and_classes_with_trailing_brackets_still_match() -> None:
    blood = ["basophil", "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "platelet"]
    tissue = ["Collecting Duct, Connecting Tubule", "Leukocytes"]
    ig = blood[1]
    assert match_class(ig, blood) == ig  # its own ")" is stripped on both sides alike
    assert match_class(f'"{ig}".', blood) == ig
    assert match_class("immature granulocytes", blood) is None  # inner "(...)" is part of the name
    assert match_class("Collecting Duct, Connecting Tubule.", tissue) == tissue[0]
    assert match_class("Collecting Duct. Connecting Tubule", tissue) is None  # inner "," is not replaceable
    assert match_class("b.e.a.c.h", UCM) is None  # inner periods are not removed
    assert match_class("beach's", UCM) is None  # a trailing "s" after an inner quote stays
    assert normalize('"Dense Residential."') == "denseresidential"


def test_multi_label_parts_are_stripped_too() -> None:
    assert chest(resp('"Effusion; Mass."'), "effusion; mass")["acc"] == 1.0
    assert chest(resp("No finding."), "no finding")["acc"] == 1.0
    assert chest(resp("effusion; ."), "effusion")["acc"] == 1.0  # an empty part (only punctuation) is dropped
    assert chest(resp('"effusion", "mass?"'), "effusion")["acc"] == 0.0  # two findings, one is wrong


def test_wrong_class_is_valid_but_wrong() -> None:
    out = score(resp("tenniscourt"))
    # acc 0, format 1 -> score 0*1 + 1*1 = 1
    assert out == {"score": 1.0, "acc": 0.0, "format": 1.0, "answer_valid": 1.0}


def test_hyphen_classes_stay_distinct() -> None:
    assert score(resp("femur left"), gt="femur-left", vocab=ORGAN, source="medmnist/organamnist")["acc"] == 1.0
    assert score(resp("femur right"), gt="femur-left", vocab=ORGAN, source="medmnist/organamnist")["acc"] == 0.0
    assert score(resp("femur"), gt="femur-left", vocab=ORGAN, source="medmnist/organamnist")["acc"] == 0.0


def test_weights_are_keyword_args() -> None:
    out = score(resp("beach"), acc_weight=2.0, format_weight=0.5)
    assert out["score"] == pytest.approx(2.5)  # 2*1 + 0.5*1


def test_ambiguous_vocabulary_matches_nothing() -> None:
    # Two names that normalise to the same key: the answer names two classes -> 0.
    assert match_class("sea ice", ["sea_ice", "seaice"]) is None
    assert match_class("sea ice", ["sea_ice", "lake"]) == "sea_ice"


def test_numpy_vocabulary_and_missing_vocabulary() -> None:
    out = compute_score("ucm", resp("beach"), "beach", {"class_names": np.array(UCM, dtype=object)})
    assert out["acc"] == 1.0
    # No vocabulary: only the label itself is accepted, still exactly.
    assert compute_score("ucm", resp("beach"), "beach", None)["acc"] == 1.0
    assert compute_score("ucm", resp("beach or river"), "beach", None)["acc"] == 0.0


def test_verl_extra_kwargs_are_accepted() -> None:
    out = compute_score(
        data_source="ucm",
        solution_str=resp("beach"),
        ground_truth="beach",
        extra_info={"class_names": UCM, "num_turns": 1, "rollout_reward_scores": {}},
        reward_router_address=None,
    )
    assert out["score"] == 2.0


@pytest.mark.parametrize(
    ("solution", "expected"),
    [
        ("<think>a</think><answer>b</answer>", 1.0),
        ("  <think>a\nb</think>\n\n<answer>b</answer>\n", 1.0),
        ("<think></think><answer></answer>", 1.0),  # shape only; the empty answer fails accuracy instead
        ("<answer>b</answer>", 0.0),  # no think
        ("<answer>b</answer><think>a</think>", 0.0),  # wrong order
        ("<think>a</think>text<answer>b</answer>", 0.0),  # text between
        ("<think>a</think><answer>b</answer> trailing", 0.0),  # text after
        ("preamble <think>a</think><answer>b</answer>", 0.0),  # text before
        ("<think>a</think><answer>b</answer><answer>c</answer>", 0.0),  # two answers
        ("<think><think>a</think><answer>b</answer>", 0.0),  # two think openings
    ],
)
def test_format_reward(solution: str, expected: float) -> None:
    assert format_reward(solution) == expected


def test_extract_answer() -> None:
    assert extract_answer("<answer> x y </answer>") == "x y"
    assert extract_answer("<answer>x</answer><answer>y</answer>") is None
    assert extract_answer("no tags") is None
    assert normalize(" Dense_Residential-A ") == "denseresidentiala"


def chest(solution: str, gt: str, metric: str = "set_match") -> dict:
    extra = {"class_names": CHEST, "multi_label": True}
    return compute_score("medmnist/chestmnist", solution, gt, extra, multi_label_metric=metric)


@pytest.mark.parametrize(
    ("answer", "gt", "set_acc", "jac"),
    [
        ("effusion; mass", "effusion; mass", 1.0, 1.0),
        ("Mass, Effusion", "effusion; mass", 1.0, 1.0),  # order and separator free
        ("effusion", "effusion; mass", 0.0, 0.5),  # |{e}∩{e,m}| / |{e,m}| = 1/2
        ("effusion; nodule", "effusion; mass", 0.0, 1 / 3),  # 1 / |{e,m,n}| = 1/3
        ("no finding", "no finding", 1.0, 1.0),  # empty vs empty
        ("No Finding", "effusion", 0.0, 0.0),  # empty vs {e}: 0/1
        ("effusion", "no finding", 0.0, 0.0),
        ("effusion; no finding", "effusion", 0.0, 0.0),  # contradictory -> invalid
        ("effusion; pneumothorax-ish", "effusion", 0.0, 0.0),  # unknown part -> invalid
        ("", "no finding", 0.0, 0.0),  # empty -> invalid
    ],
)
def test_chest_multi_label(answer: str, gt: str, set_acc: float, jac: float) -> None:
    assert chest(resp(answer), gt)["acc"] == pytest.approx(set_acc)
    assert chest(resp(answer), gt, "jaccard")["acc"] == pytest.approx(jac)


def test_chest_detected_from_data_source_and_bad_metric() -> None:
    out = compute_score("medmnist/chestmnist", resp("mass; effusion"), "effusion; mass", {"class_names": CHEST})
    assert out["acc"] == 1.0
    with pytest.raises(ValueError, match="multi_label_metric"):
        chest(resp("mass"), "mass", "f1")
    assert jaccard(frozenset(), frozenset()) == 1.0


def test_parse_prediction_canonical() -> None:
    assert parse_prediction(resp("Dense Residential"), UCM) == "denseresidential"
    assert parse_prediction(resp("mass; effusion"), CHEST, multi_label=True) == "effusion; mass"
    assert parse_prediction(resp("no finding"), CHEST, multi_label=True) == "no finding"
    assert parse_prediction(resp("beach or river"), UCM) is None


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (resp("beach"), resp("Beach"), 1.0),
        (resp("beach"), resp('"Beach."'), 1.0),  # the same class, quoted and with a period
        (resp("beach"), resp("tenniscourt"), 0.0),
        (resp("beach"), resp("beach or river"), 0.0),
        (resp(""), resp(""), 0.0),  # two invalid answers do not agree
        ("beach", "beach", 0.0),  # outside tags on both views
    ],
)
def test_oc_agreement(a: str, b: str, expected: float) -> None:
    assert oc_agreement(a, b, UCM) == expected


def test_oc_agreement_multi_label() -> None:
    assert oc_agreement(resp("mass; effusion"), resp("effusion, mass"), CHEST, multi_label=True) == 1.0
    assert oc_agreement(resp("mass"), resp("effusion, mass"), CHEST, multi_label=True) == 0.0


def test_loads_through_verls_custom_reward_loader() -> None:
    """verl 0.9.1's own loader (reward.custom_reward_function.{path,name,reward_kwargs}) and call convention."""
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    import verl_ext.rewards as rewards

    cfg = {"path": rewards.__file__, "name": "compute_score", "reward_kwargs": {"acc_weight": 2.0}}
    fn = get_custom_reward_fn(OmegaConf.create({"reward": {"custom_reward_function": cfg}}))
    out = fn(data_source="ucm", solution_str=resp("Beach"), ground_truth="beach", extra_info={"class_names": UCM})
    assert out == {"score": 3.0, "acc": 1.0, "format": 1.0, "answer_valid": 1.0}  # 2*1 + 1*1
