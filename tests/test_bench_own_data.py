"""`python -m experiments.own_data --quick`: issue 28's table (adapters, MiniLM
fine-tuned and LoRA beside the peer baseline, in one run) on a few dozen real
Banking77 and GoEmotions examples, and its resume (finished runs are read
back, not trained again)."""

import re
import subprocess
import sys

from bertvision.runs import RunFolder
from tests.conftest import REPO_ROOT
from tests.test_reproduce import ENV


def bench(work, data):
    proc = subprocess.run([sys.executable, "-m", "experiments.own_data", "--quick", "--work", str(work), "--data-root",
                           str(data)], cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_own_data_bench_quick_table_and_resume(tmp_path, shared_data):
    work = tmp_path / "own"
    out = bench(work, shared_data)
    assert "## banking77 (test; main metric accuracy)" in out
    assert "## goemotions (dev; main metric micro_f1)" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    # linear_probe, the peer baseline, fine-tuning and LoRA per dataset (GoEmotions: multi-label)
    assert len(rows) == 8 and "not run" not in out
    for tuned in (rows[2:4], rows[6:8]):
        assert [r.split("|")[1].strip() for r in tuned] == ["MiniLM fine-tuned (0.5 epochs)",
                                                            "MiniLM LoRA r=8 (0.5 epochs)"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        method, seeds, main, macro, params, seconds, peak = cells
        assert seeds == "1" and 0 <= float(main) <= 1 and 0 <= float(macro) <= 1
        assert int(params.replace(",", "")) > 0 and float(seconds) >= 0 and float(peak) > 100
    peers = [r for r in rows if "peer baseline" in r]
    for tuned in (rows[2:4], rows[6:8]):
        bert, lora = (int(r.split("|")[5].strip().replace(",", "")) for r in tuned)
        assert bert > 20_000_000 > lora > 10_000  # the whole MiniLM; LoRA's adapters and the head
    assert "one-vs-rest" in peers[1] and "one-vs-rest" not in peers[0]
    # logistic regression's parameters: (384 + 1) per class the training sample holds
    params = [int(re.split(r"\s*\|\s*", r.strip("| "))[4].replace(",", "")) for r in peers]
    assert all(p % 385 == 0 and 385 <= p <= 77 * 385 for p in params)
    assert (work / "results.md").read_text().strip() in out
    stamp = (work / "banking77" / "linear_probe-seed0" / "results.json").stat().st_mtime_ns
    again = bench(work, shared_data)
    assert [r for r in again.splitlines() if "linear_probe" in r] == [r for r in rows if "linear_probe" in r]
    assert (work / "banking77" / "linear_probe-seed0" / "results.json").stat().st_mtime_ns == stamp
    # GoEmotions fine-tuned as a multi-label task: a threshold per label, chosen on dev
    for name in ("finetune", "lora"):
        results = RunFolder(work / "goemotions" / name).results()
        assert results.spec.kind == "multi_label" and len(results.thresholds) == 28
