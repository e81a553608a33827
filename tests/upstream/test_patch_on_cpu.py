"""The verl patches in upstream/ apply to the installed verl 0.9.1, alone and together, and work (prove_patch.py).

One run of the proof script: copies of the installed verl package with verl's vendored CPU tests; each patch alone and
both together applied with `git apply`; the patches' own tests pass on each patched copy and verl's tests end test by
test as on the unpatched copy; each patch's tests fail on the unpatched copy; the project's flavour-aware tests pass
with the doubly patched verl first on the path. No Ray: a few pytest processes.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXPECTED = ["reference"] + ["applies", "pass", "same"] * 3 + ["fail", "fail", "pass"]


@pytest.mark.slow
def test_patches_apply_alone_and_together_and_change_no_verl_test_outcome(tmp_path):
    report = tmp_path / "checks.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "upstream" / "prove_patch.py"), "--json", str(report)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=2400,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    checks = json.loads(report.read_text())
    assert [c["expected"] for c in checks] == EXPECTED
    assert all(c["ok"] for c in checks), checks
    assert "passed" in checks[0]["result"]  # verl's own tests ran on the unpatched copy
    for same in checks[3], checks[6], checks[9]:
        assert same["result"].endswith("identical per test")
    assert all("ImportError" in c["result"] for c in checks[10:12])  # the unpatched verl has neither addition
