"""The jigsaw geometry and reward (verl_ext.jigsaw): hand-computed cases, adversarial answers, property tests."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verl_ext.jigsaw import (
    answer_text,
    check_geometry,
    compute_dense_score,
    compute_score,
    draw_permutation,
    ground_truth_answer,
    image_tokens,
    max_score,
    min_tile_distance,
    parse_ground_truth,
    parse_numbers,
    shuffle_tiles,
    unshuffle_tiles,
)

GT_3X3 = "2 3 1\n4 5 6\n9 7 8"  # truth = (2, 3, 1, 4, 5, 6, 9, 7, 8)


def wrap(answer: str, think: str = "ok") -> str:
    return f"<think>{think}</think><answer>{answer}</answer>"


def test_exact_answer_scores_three():
    # hit 9/9 = 1, exact 1, format 1 -> 3
    out = compute_score("jigsaw_3x3", wrap(GT_3X3), GT_3X3)
    assert out == {"score": 3.0, "hit": 1.0, "acc": 1.0, "format": 1.0, "answer_valid": 1.0}
    assert max_score() == 3.0


def test_partial_answer_hand_computed():
    # answer 2 3 1 / 4 5 6 / 7 8 9: positions 1-6 right (2,3,1,4,5,6), 7-9 wrong (7≠9, 8≠7, 9≠8) -> hit 6/9
    out = compute_score("jigsaw_3x3", wrap("2 3 1\n4 5 6\n7 8 9"), GT_3X3)
    assert out["hit"] == pytest.approx(6 / 9) and out["acc"] == 0.0 and out["format"] == 1.0
    assert out["score"] == pytest.approx(6 / 9 + 0 + 1)


def test_separators_jigsaw_r1_accepts():
    for text in ("2,3,1,4,5,6,9,7,8", "2;3;1\n4;5;6\n9;7;8", "```\n2 3 1\n4 5 6\n9 7 8\n```", " 2 3 1 4 5 6 9 7 8 "):
        assert compute_score("j", wrap(text), GT_3X3)["acc"] == 1.0, text


def test_weights_and_no_format():
    # no <think>: format 0, but hit/exact still count (as in the classification reward); weights 0.5/2/3
    out = compute_score("j", f"<answer>{GT_3X3}</answer>", GT_3X3, hit_weight=0.5, acc_weight=2, format_weight=3)
    assert (out["format"], out["score"]) == (0.0, 0.5 * 1 + 2 * 1 + 0)


@pytest.mark.parametrize(
    "response",
    [
        wrap("2 2 3 3 1 1 4 4 5 5 6 6 9 9 7 7 8 8"),  # every number twice
        wrap("2 3 1 4 5 6 9 7 8 9"),  # an extra number
        wrap("2 3 1 4 5 6 9 7"),  # a missing number
        wrap("2 3 1 4 5 6 9 7 7"),  # a duplicate replacing 8
        wrap("1 2 3 4 5 6 7 8 10"),  # out of range
        wrap("0 2 3 4 5 6 7 8 9"),  # 0 is not a position
        wrap("1 2 3 4\n5 6 7 8\n9 10 11 12\n13 14 15 16"),  # a 4x4 answer to a 3x3 puzzle
        wrap("The order is 2 3 1 4 5 6 9 7 8"),  # prose
        wrap("-2 3 1 4 5 6 9 7 8"),  # a sign
        wrap("[2, 3, 1, 4, 5, 6, 9, 7, 8]"),  # brackets are not a Jigsaw-R1 separator
        wrap("2.0 3 1 4 5 6 9 7 8"),  # a decimal point
        "2 3 1\n4 5 6\n9 7 8",  # missing tags
        "<think>x</think>2 3 1 4 5 6 9 7 8",  # no answer block
        wrap(GT_3X3) + "<answer>1 2 3 4 5 6 7 8 9</answer>",  # two answer blocks
        wrap(""),  # empty
    ],
)
def test_adversarial_answers_score_zero_on_hit_and_exact(response):
    out = compute_score("jigsaw_3x3", response, GT_3X3)
    assert out["hit"] == 0.0 and out["acc"] == 0.0 and out["answer_valid"] == 0.0


def test_identity_answer_is_valid_but_scores_only_its_fixed_points():
    # identity 1..9 vs truth (2,3,1,4,5,6,9,7,8): positions 4,5,6 agree -> hit 3/9
    out = compute_score("j", wrap("1 2 3\n4 5 6\n7 8 9"), GT_3X3)
    assert out["hit"] == pytest.approx(3 / 9) and out["acc"] == 0.0 and out["answer_valid"] == 1.0


def test_bad_ground_truth_is_a_data_error():
    for gt in ("1 2 3", "1 1 2 3", "a b c d", "1 2 3 4 5"):
        with pytest.raises(ValueError, match="ground truth"):
            parse_ground_truth(gt)


def test_dense_toy_score_adds_a_digit_share():
    # "<answer>1</answer>": 18 characters, 1 digit in 1..4 -> dense 1/18; the real parts are 0 (invalid, no think)
    out = compute_dense_score("j", "<answer>1</answer>", "2 1\n4 3")
    assert out["dense"] == pytest.approx(1 / 18) and out["score"] == pytest.approx(1 / 18)
    assert set(out) == {"score", "hit", "acc", "format", "answer_valid", "dense"}


def test_geometry_checks():
    assert check_geometry(3, 112) == 336 and image_tokens(3, 112) == 144  # 336 / 28 = 12 -> 144 tokens
    with pytest.raises(ValueError, match="multiple of 28"):
        check_geometry(3, 100)
    with pytest.raises(ValueError, match="grid must be"):
        check_geometry(1, 112)
    with pytest.raises(ValueError, match="outside the processor"):
        check_geometry(3, 112, max_pixels=28 * 28 * 64)  # the tiny model's limit: 224² < 336²


def test_permutation_never_identity_and_seeded():
    perms = [draw_permutation(4, 0, k) for k in range(300)]
    assert all(p != (0, 1, 2, 3) for p in perms)
    assert len(set(perms)) == 23  # all non-identity permutations of 4 show up in 300 draws
    assert draw_permutation(9, 5, 7) == draw_permutation(9, 5, 7) != draw_permutation(9, 6, 7)


@settings(max_examples=40, deadline=None)
@given(grid=st.integers(2, 4), seed=st.integers(0, 10_000), key=st.integers(0, 10_000))
def test_unshuffle_with_ground_truth_restores_every_pixel(grid, seed, key):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(grid * 28, grid * 28, 3), dtype=np.uint8)
    perm = draw_permutation(grid * grid, seed, key)
    answer = ground_truth_answer(perm)
    shuffled = shuffle_tiles(image, grid, perm)
    assert not np.array_equal(shuffled, image)  # never the identity, tiles are distinct (random pixels)
    assert np.array_equal(unshuffle_tiles(shuffled, grid, answer), image)
    truth = answer_text(answer, grid)
    assert parse_numbers(truth, grid * grid) == tuple(answer)
    assert compute_score("j", wrap(truth), truth)["score"] == 3.0


def test_shuffle_hand_computed_2x2():
    # tiles 0..3 filled with their index; perm (1, 0, 3, 2): position 0 shows tile 1, ... -> answer "2 1\n4 3"
    image = np.zeros((56, 56, 1), dtype=np.uint8)
    for k, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        image[r * 28 : (r + 1) * 28, c * 28 : (c + 1) * 28] = k
    shuffled = shuffle_tiles(image, 2, (1, 0, 3, 2))
    assert [int(shuffled[0, 0, 0]), int(shuffled[0, 28, 0]), int(shuffled[28, 0, 0]), int(shuffled[28, 28, 0])] == [
        1,
        0,
        3,
        2,
    ]
    assert answer_text(ground_truth_answer((1, 0, 3, 2)), 2) == "2 1\n4 3"


def test_min_tile_distance_hand_computed():
    # 2x2 of 28-px tiles, values 0, 10, 10, 40 (uniform tiles): min |difference| = |10 - 10| = 0; 0, 10, 20, 40 -> 10
    def image(values):
        out = np.zeros((56, 56, 3), dtype=np.uint8)
        for k, v in enumerate(values):
            out[(k // 2) * 28 : (k // 2 + 1) * 28, (k % 2) * 28 : (k % 2 + 1) * 28] = v
        return out

    assert min_tile_distance(image([0, 10, 10, 40]), 2) == 0.0
    assert min_tile_distance(image([0, 10, 20, 40]), 2) == 10.0


@pytest.mark.parametrize(
    "answer",
    [
        "9" * 5000,  # over Python's 4,300-digit int() limit: ValueError today, uncaught by verl's reward loop
        "0" * 5000 + "1",  # leading zeros count towards the limit too
        " ".join(["1" * 4301] * 9),
        "2 3 1 4 5 6 9 7 " + "8" * 10_000,
    ],
)
def test_huge_numbers_never_raise(answer):
    out = compute_score("jigsaw_3x3", wrap(answer), GT_3X3)
    assert out["answer_valid"] == 0.0 and out["hit"] == 0.0 and out["format"] == 1.0
    assert parse_numbers(answer, 9) is None


def test_leading_zeros_still_parse():
    # "02" is the number 2 (the parser accepted it before): the width check is on the value, not the text
    assert parse_numbers("02 03 01 04 05 06 09 07 008", 9) == (2, 3, 1, 4, 5, 6, 9, 7, 8)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("0123456789 ,;`\n<>/answerthink٣１x")), max_size=400))
def test_compute_score_never_raises_on_any_string(text):
    for response in (text, wrap(text), f"<answer>{text}"):
        out = compute_score("jigsaw_3x3", response, GT_3X3)
        assert set(out) == {"score", "hit", "acc", "format", "answer_valid"}
        assert 0.0 <= out["hit"] <= 1.0
