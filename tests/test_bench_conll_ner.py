"""experiments.conll_ner --quick: the benchmark's whole adapter pipeline on tens of
CoNLL-2003 sentences (extract, fit, predict the test split; one adapter kind), its table filled."""

from experiments.conll_ner import main


def test_quick_mode_fills_the_table(tmp_path, shared_data, capsys):
    assert main(["--work", str(tmp_path), "--data", str(shared_data / "conll2003"), "--quick", "--no-finetune"]) == 0
    table = (tmp_path / "results.md").read_text()
    assert "--quick: a smoke run, not a result" in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert len(rows) == 1 and rows[0].startswith("| scalar_mix ")
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == "1" and 0.0 <= float(cells[2]) <= 100.0 and int(cells[4]) > 0 and float(cells[7]) > 0
    assert (tmp_path / "runs" / "scalar_mix-seed0" / "test.conll").is_file()
    # --report-only runs nothing and tabulates the finished runs: the same rows (peak memory from results.json)
    (tmp_path / "runs" / "scalar_mix-seed0" / "test.conll").unlink()
    assert main(["--work", str(tmp_path), "--data", str(shared_data / "conll2003"), "--quick", "--no-finetune",
                 "--report-only"]) == 0
    again = [line for line in (tmp_path / "results.md").read_text().splitlines()
             if line.startswith("| ") and not line.startswith("| method")]
    assert [r.split("|")[1:8] for r in again] == [r.split("|")[1:8] for r in rows]
    assert not (tmp_path / "runs" / "scalar_mix-seed0" / "test.conll").exists()
