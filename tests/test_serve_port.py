"""Issue 32 item 5: ``pipelines.serve`` on a busy port says so in one line, at
once, before loading any run; it printed "serving ... on http://..." and
"Application startup complete", then failed with exit 3."""

import socket

from pipelines.serve import main as serve_main
from tests.stores import run_main


def test_a_busy_port_is_one_line_before_anything_is_served(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = run_main(serve_main, "--run", tmp_path / "no-such-run", "--port", port)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"error: --port {port}: 127.0.0.1:{port} is already in use") and "serving" not in err
    code, out, err = run_main(serve_main, "--run", tmp_path / "no-such-run", "--host", "no.such.host.invalid")
    assert code == 2 and err.startswith("error: --host no.such.host.invalid: ") and err.count("\n") == 1, err
