"""Issue 32 item 2: a refused command leaves no folder behind (a left
config.json then refused the corrected command as "an unfinished run with
other settings"). Every check that can refuse runs before the folder is
made; the fit case is in tests/test_store_identity.py."""

import pytest

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


def test_a_finetune_resumed_on_edited_data_is_refused(shared_data, tmp_path):
    """Issue 32 item 1 for fine-tuning, which reads data files, not a store: the examples it read are
    recorded at start (their sha256), and a resume on edited files is refused before any training."""
    from bertvision.errors import RunError
    from bertvision.runs import RunFolder
    from bertvision.training.finetune import _RESUME_FREE, FinetuneConfig, Finetuner

    data = tmp_path / "SST-2"
    data.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        lines = (shared_data / "glue" / "SST-2" / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (data / name).write_text("".join(lines[:9]), encoding="utf-8")
    config = FinetuneConfig(task="sst2", data_dir=str(data), out=str(tmp_path / "run"), limit=8, progress=False)
    started = Finetuner(config)
    started.prepare()  # the run starts (what Finetuner.run does first) and is killed
    RunFolder(config.out).begin(config, ignore=_RESUME_FREE, store=started.data_identity())
    edited = (data / "train.tsv").read_text(encoding="utf-8").replace("\t0\n", "\t1\n", 1)
    (data / "train.tsv").write_text(edited, encoding="utf-8")
    with pytest.raises(RunError, match=r"was started on other examples of sst2 .* files edited or replaced\?\): "
                                       r"resuming would train on two data sets; put the original files back"):
        Finetuner(config).run()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "store.json"]
