"""Issue 32 item 2: a refused command leaves no folder behind (a left
config.json then refused the corrected command as "an unfinished run with
other settings"). Every check that can refuse runs before the folder is
made; the fit case is in tests/test_store_identity.py."""

from pipelines.finetune import main as finetune_main
from tests.stores import run_main


def test_finetune_refusals_leave_no_folder(shared_data, tmp_path):
    out = tmp_path / "run"
    sst2 = shared_data / "glue" / "SST-2"
    code, _, err = run_main(finetune_main, "--task", "sst2", "--data-dir", sst2, "--out", out, "--limit", "8",
                            "--eval-split", "test")
    assert code == 2 and err.count("\n") == 1 and "sst2/test: the split has no gold labels" in err, err
    assert not out.exists()
    code, _, err = run_main(finetune_main, "--task", "sst2", "--data-dir", tmp_path / "nowhere", "--out", out,
                            "--limit", "8")
    assert code == 2 and err.count("\n") == 1 and not out.exists(), err
