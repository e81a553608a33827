"""upstream/verl-0.9.1-domain_grpo.patch applies to the installed verl 0.9.1 and works (upstream/prove_patch.py).

One run of the proof script: copies of the installed verl package, the patch applied with `git apply`, the patch's
tests and verl's vendored tests/trainer/ppo/*_on_cpu.py passing on the patched copy, the patch's tests failing on the
unpatched copy, and the project's estimator and trainer-mode tests passing with the patched verl first on the path
(there D_i must reach verl's own `domain_grpo` through verl's `compute_advantage`). No Ray: a few pytest processes.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_patch_applies_and_its_tests_and_verls_pass(tmp_path):
    report = tmp_path / "checks.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "upstream" / "prove_patch.py"), "--json", str(report)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    checks = json.loads(report.read_text())
    assert [c["expected"] for c in checks] == ["applies", "pass", "pass", "fail", "pass"]
    assert all(c["ok"] for c in checks), checks
    patch_tests, verl_tests = checks[1]["result"], checks[2]["result"]
    assert "passed" in patch_tests and "failed" not in patch_tests
    assert verl_tests.startswith("116 passed")  # verl v0.9.0's tests/trainer/ppo/*_on_cpu.py, all of them
    assert "ImportError" in checks[3]["result"]  # the unpatched verl has no domain_grpo to import
