"""bench/bench_divergences.py runs as its docstring says, `--out` included (it once measured for minutes and then
failed to import its own results writer when started as a script)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_script_writes_its_section(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text("# Benchmark results\n\n<!-- section:other -->\n## Other\n\nkept\n<!-- /section:other -->\n")
    argv = [sys.executable, str(REPO / "bench" / "bench_divergences.py"), "--tokens", "8", "--vocab", "64"]
    proc = subprocess.run([*argv, "--repeats", "1", "--out", str(out)], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert "## Chunked full-vocabulary KL + JS vs naive fp32" in text and "| chunked |" in text
    assert "kept" in text  # the other sections stay
