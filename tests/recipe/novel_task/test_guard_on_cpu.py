"""The SFT-on-rollouts guard: stops with one line when too few images have a correct rollout."""

from __future__ import annotations

import json

from recipe.novel_task.guard import main


def _dump(tmp_path, scores):
    # one rollout per (row, score); row 0 twice correct counts once (at most one per image)
    records = [
        {"row_index": row, "output": f"<answer>{k}</answer>", "score": s, "truncated": False, "step": 1, "session": k}
        for k, (row, s) in enumerate(scores)
    ]
    (tmp_path / "1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(tmp_path)


def test_guard_counts_images_and_refuses_too_few(tmp_path, capsys):
    dump = _dump(tmp_path, [(0, 3.0), (0, 3.0), (1, 2.5), (2, 3.0)])  # images with a score-3 rollout: 0 and 2 -> 2
    assert main(["--dump", dump, "--min-rows", "2"]) == 0
    assert main(["--dump", dump, "--min-rows", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "for 2 images, fewer than --min-rows 3" in err[0]
    assert main(["--dump", dump, "--min-rows", "3", "--min-score", "2.5"]) == 0  # image 1 now counts
    assert main(["--dump", str(tmp_path / "none"), "--min-rows", "1"]) == 2
    assert main(["--dump", dump, "--min-rows", "0"]) == 2
