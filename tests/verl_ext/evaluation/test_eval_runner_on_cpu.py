"""Evaluation loop with a scripted backend: every metric hand-computed; vLLM absence is a clear error."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from eval_rows import UCM_VOCAB, make_row, write_rows

from verl_ext.evaluation import runner
from verl_ext.evaluation.__main__ import main
from verl_ext.evaluation.backends import make_backend
from verl_ext.transforms import apply_transform

# row -> (label, whitelist, {view: answer}); "" = an invalid (empty) answer
SCRIPT = {
    0: ("beach", ["rot90", "rot180"], {"identity": "beach", "rot90": "beach", "rot180": "forest"}),
    1: ("forest", ["rot90", "rot180"], {"identity": "river", "rot90": "river", "rot180": ""}),
    2: ("river", ["rot90", "rot180"], {"identity": "river", "rot90": "beach", "rot180": "river"}),
    3: ("beach", ["rot180"], {"identity": "beach", "rot180": "beach"}),
}


class ScriptedBackend:
    """Answers by image content; the answer distribution is one-hot on the scripted answer (uniform if invalid)."""

    def __init__(self, rows: list[runner.Row]) -> None:
        self.by_image: dict[bytes, str] = {}
        for row in rows:
            for view, answer in SCRIPT[row.index][2].items():
                self.by_image[apply_transform(row.image, view).tobytes()] = answer
        self.prefixes: list[str] = []

    def generate(self, views):
        return [f"<think>t</think><answer>{self.by_image[v.image.tobytes()]}</answer>" for v in views]

    def score_answers(self, views, prefixes, vocabularies):
        self.prefixes.extend(prefixes)
        out = []
        for v, vocab in zip(views, vocabularies):
            answer = self.by_image[v.image.tobytes()]
            out.append(np.array([0.0 if (c == answer or not answer) else -np.inf for c in vocab]))
        return out


@pytest.fixture()
def rows(tmp_path) -> list[runner.Row]:
    data = [make_row(i, label, UCM_VOCAB, wl) for i, (label, wl, _) in SCRIPT.items()]
    return runner.load_rows(write_rows(tmp_path / "test.parquet", data))


def test_evaluate_hand_computed(rows) -> None:
    backend = ScriptedBackend(rows)
    outputs = runner.run_views(rows, backend, ["rot90", "rot180"], batch_size=3)
    metrics, records = runner.evaluate(rows, outputs)
    # original: rows 0, 2, 3 right, row 1 wrong -> 3/4
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["per_class_accuracy"] == {"beach": 1.0, "forest": 0.0, "river": 1.0}
    assert metrics["confusion"]["matrix"] == [[2, 0, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]]
    rot90, rot180 = metrics["views"]["rot90"], metrics["views"]["rot180"]
    # rot90 only on rows 0-2 (row 3's whitelist lacks it): beach/river/beach vs beach/forest/river -> 1/3
    assert rot90["n"] == 3 and rot90["accuracy"] == pytest.approx(1 / 3)
    # agreement with original (beach, river, river): same, same, different -> 2/3
    assert rot90["agreement_with_original"] == pytest.approx(2 / 3)
    # one-hot distributions: JS = 0 where the answers agree, 1 where they differ -> (0 + 0 + 1)/3
    assert rot90["mean_js_to_original"] == pytest.approx(1 / 3)
    # rot180 on rows 0-3: forest/None/river/beach vs beach/forest/river/beach -> 2/4; agreement: no, no, yes, yes
    assert rot180["accuracy"] == pytest.approx(0.5)
    assert rot180["agreement_with_original"] == pytest.approx(0.5)
    # row 1: original one-hot on river vs uniform (invalid answer): M = (1/6, 1/6, 2/3);
    # KL(P||M) = log2(3/2) = 0.584963; KL(U||M) = 2/3 log2(2) + 1/3 log2(1/2) = 1/3; JS = (0.584963 + 1/3)/2 = 0.459148
    # rows 0 (beach vs forest) 1.0, row 2 and 3 agree 0 -> mean (1 + 0.459148 + 0 + 0)/4 = 0.364787
    assert rot180["mean_js_to_original"] == pytest.approx(0.364787, abs=1e-6)
    # mean over transforms: accuracy (1/3 + 1/2)/2 = 5/12, agreement (2/3 + 1/2)/2 = 7/12
    assert metrics["invariance"]["mean_accuracy_transformed"] == pytest.approx(5 / 12)
    assert metrics["invariance"]["mean_agreement"] == pytest.approx(7 / 12)
    # argmax of the original distributions = the original answers -> 3/4
    assert metrics["views"]["identity"]["answer_dist_accuracy"] == pytest.approx(0.75)
    # every view is scored after the ORIGINAL response's prefix up to "<answer>"
    assert set(backend.prefixes) == {"<think>t</think><answer>"}
    assert len(records) == 4 + 3 + 4


def test_multi_label_rows_and_canonical_labels(tmp_path) -> None:
    vocab = ["effusion", "mass", "nodule", "no finding"]
    data = [make_row(0, "mass; effusion", vocab, ["hflip"], source="medmnist/chestmnist")]
    (row,) = runner.load_rows(write_rows(tmp_path / "c.parquet", data))
    assert row.multi_label and row.label == "effusion; mass"  # vocabulary order
    assert runner.canonical_label("no finding", vocab, True) == "no finding"


def test_helpers() -> None:
    msgs = runner.to_messages([{"role": "user", "content": "<image>What?"}])
    assert msgs == [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]}]
    assert runner.answer_prefix("<think>a</think> <answer>x</answer>") == "<think>a</think> <answer>"
    assert runner.answer_prefix("no tags") == runner.FALLBACK_PREFIX
    assert runner.check_transforms(["rot90", "identity", "rot90"]) == ["rot90"]
    with pytest.raises(ValueError, match="unknown transform"):
        runner.check_transforms(["rot45"])


def test_vllm_absent_is_a_clear_error(monkeypatch, tmp_path) -> None:
    data = write_rows(tmp_path / "t.parquet", [make_row(0, "beach", UCM_VOCAB, None)])
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(RuntimeError, match="vLLM"):
        make_backend("vllm", "/nonexistent")
    with pytest.raises(SystemExit, match="vLLM package"):
        main(["--model", "/nonexistent", "--data", str(data), "--out", str(tmp_path / "o"), "--backend", "vllm"])
    with pytest.raises(SystemExit, match="unknown transform"):
        main(["--model", "/nonexistent", "--data", str(data), "--out", str(tmp_path / "o"), "--transforms", "rot45"])
    with pytest.raises(ValueError, match="unknown backend"):
        make_backend("onnx", "/nonexistent")
