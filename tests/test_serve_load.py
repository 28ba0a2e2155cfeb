"""experiments.serve_load --quick: the load benchmark's short bounded version, real
closed-loop clients against a real pipelines.serve on loopback, served
adapters beside the fine-tuned-BERT baseline in the same run (N = 1 and 2
adapters, 4 clients, a second a cell and side)."""

import json

from experiments.serve_load import main as serve_load_main
from tests.serving_runs import mrpc_store, served_runs, sst2_mean_store  # noqa: F401
from tests.stores import run_main, squad_store, sst2_cls_store, sst2_seq_store  # noqa: F401


def test_bounded_load_benchmark(served_runs, tmp_path):  # noqa: F811
    ft = served_runs["ft"]
    code, out, err = run_main(serve_load_main, "--quick", "--work", tmp_path, "--served", f"cls={served_runs['cls']}",
                              "--served", f"seq={served_runs['seq']}", "--baseline", f"ft1={ft}",
                              "--baseline", f"ft2={ft}", "--concurrency", "4", "--duration", "1",
                              "--warmup", "0.3")
    assert code == 0, (out[-3000:], err[-3000:])
    assert "served: cls, seq on 1 backbone(s)" in out and "baseline: ft1, ft2 on 2 backbone(s)" in out
    info = json.loads((tmp_path / "serve_load.json").read_text())
    assert [(r["adapters"], r["concurrency"]) for r in info["rows"]] == [(1, 4), (2, 4)]
    for row in info["rows"]:
        for side in ("served", "baseline"):
            assert row[side]["requests"] > 0 and row[side]["errors"] == 0
            assert 0 < row[side]["p50_ms"] <= row[side]["p99_ms"]
        assert row["ratio"] > 0
    assert info["server_exit"] == 0 and info["server"]["batches"] > 0
    table = (tmp_path / "serve_load.md").read_text()
    assert "| N | clients | served req/s | p50 ms | p99 ms | baseline req/s |" in table and "load average" in table
