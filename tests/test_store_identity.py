"""Issue 32 items 1 and 2: a run records the identity of its store (manifest
sha256) when it starts; resuming it on another store at the same path is
refused in one line with the way out, and predicting with a finished run
whose store was replaced warns. A refused fit leaves no folder behind."""

import shutil

import pytest

from bertvision.errors import RunError
from bertvision.inference.predict import predict_run
from bertvision.inference.serving import Predictor
from bertvision.runs import RunFolder
from bertvision.store.format import open_store
from bertvision.training.fit import FitConfig, fit
from pipelines import fit as fit_cli
from tests.stores import _root, build_store, sst2_cls_store  # noqa: F401

IGNORE = ("command", "verbose", "out", "verify")


@pytest.fixture(scope="module")
def other_sst2_store(tmp_path_factory, shared_data):
    """Same settings (signature) as sst2_cls_store, other data: 48 examples of train and dev, not 64."""
    return build_store(_root(tmp_path_factory), "sst2_cls_48", "sst2", shared_data / "glue" / "SST-2",
                       ["train", "dev"], limit=48, token_mode="cls", max_seq_len=64)


@pytest.fixture(scope="module")
def unlabelled_store(tmp_path_factory, shared_data):
    return build_store(_root(tmp_path_factory), "sst2_cls_test", "sst2", shared_data / "glue" / "SST-2",
                       ["train", "test"], limit=16, token_mode="cls", max_seq_len=64)


def _config(store, out):
    return FitConfig(store=str(store), out=str(out), adapter={"kind": "linear_probe"}, epochs=1, batch_size=16,
                     verbose=0, jit_compile=False)


def test_a_resume_on_a_replaced_store_is_refused(sst2_cls_store, other_sst2_store, tmp_path, capsys):  # noqa: F811
    store = tmp_path / "store"
    shutil.copytree(sst2_cls_store, store)
    config = _config(store, tmp_path / "run")
    # the run starts (what fit does first) and is killed: its folder records the store it started on
    started = open_store(str(store))
    RunFolder(config.out).begin(config, ignore=IGNORE, store=started.identity())
    saved = (tmp_path / "run" / "config.json").read_text()
    assert (tmp_path / "run" / "store.json").is_file()
    shutil.rmtree(store)  # re-extracted at the same path with other data
    shutil.copytree(other_sst2_store, store)
    assert open_store(str(store)).manifest_sha256 != started.manifest_sha256
    with pytest.raises(RunError, match=r"was started on the store .* another one now .*re-extracted.*put the "
                                       r"original store back, or start over with another --out") as err:
        fit(_config(store, tmp_path / "run"))
    assert "\n" not in str(err.value)
    assert (tmp_path / "run" / "config.json").read_text() == saved and not (tmp_path / "run" / "state").exists()
    # the original store back: the run resumes and finishes, recording the store it trained on
    shutil.rmtree(store)
    shutil.copytree(sst2_cls_store, store)
    capsys.readouterr()
    results = fit(_config(store, tmp_path / "run"))
    # killed before its first saved state: it says it starts again (a rerun printed nothing, issue 32 item 5)
    assert "no saved training state in" in capsys.readouterr().err and results.resumed_from is None
    assert results.store_manifest_sha256 == started.manifest_sha256 == RunFolder(config.out).results() \
        .store_manifest_sha256


def test_predicting_with_a_run_whose_store_was_replaced_warns(sst2_cls_store, other_sst2_store, tmp_path,  # noqa: F811
                                                              capsys):
    store = tmp_path / "store"
    shutil.copytree(sst2_cls_store, store)
    fit(_config(store, tmp_path / "run"))
    predict_run(tmp_path / "run", str(store), "dev")
    assert "replaced" not in capsys.readouterr().err
    shutil.rmtree(store)
    shutil.copytree(other_sst2_store, store)
    preds = predict_run(tmp_path / "run", str(store), "dev")
    assert len(preds.uids) == 48
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"its store {store} was replaced since it trained" in err
    predict_run(tmp_path / "run", other_sst2_store, "dev")  # another store given on purpose: no warning
    assert "replaced" not in capsys.readouterr().err
    Predictor.from_runs([str(tmp_path / "run")])  # serving reads the run's store for its featurizer: it warns too
    err = capsys.readouterr().err
    assert f"its store {store} was replaced since it trained" in err and "the run is still valid" in err


def test_a_fit_refused_for_an_unlabelled_eval_split_leaves_no_folder(unlabelled_store, tmp_path, capsys):
    """It was refused after the first epoch ('the split has no gold labels'), leaving config.json, which
    then refused the corrected command as 'an unfinished run with other settings'."""
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        fit_cli.main(["--store", unlabelled_store, "--adapter", "linear_probe", "--out", str(out), "--epochs", "1",
                      "--eval-split", "test", "--quiet"])
    assert exit_.value.code == 2 and not out.exists()
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "split 'test' has no gold labels" in err and "\n" not in err


def test_a_corrupt_shard_met_unverified_is_one_line_and_the_run_resumes(sst2_cls_store, tmp_path,  # noqa: F811
                                                                        capsys):
    """`fit --no-verify` on a corrupt shard gave a ~40-line DataLossError traceback."""
    store = tmp_path / "store"
    shutil.copytree(sst2_cls_store, store)
    shard = open_store(str(store)).shard_paths("train")[0]
    good = open(shard, "rb").read()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF  # one flipped byte: the record's CRC no longer holds
    open(shard, "wb").write(bytes(bad))
    out = tmp_path / "run"
    argv = ["--store", str(store), "--adapter", "linear_probe", "--out", str(out), "--epochs", "1",
            "--batch-size", "16", "--no-verify", "--no-jit-compile", "--quiet"]
    with pytest.raises(SystemExit) as exit_:
        fit_cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err.count("\n") == 0, err
    assert err.startswith(f"error: {shard}: checksum mismatch") and "the same command then resumes" in err
    assert (out / "config.json").is_file() and not (out / "results.json").exists()
    open(shard, "wb").write(good)  # extracted again: the same bytes
    assert fit_cli.main(argv) == 0 and (out / "results.json").is_file()
