"""The benchmark scripts parse their arguments and fail clearly without data.

Why: the README quotes figures these scripts print; a script that no longer imports or parses
its documented flags would leave those figures without a way to reproduce them. Running the
benchmarks themselves takes minutes, so only their entry points are checked here.
"""

from __future__ import annotations

import importlib

import pytest

# score_rss is left out: it passes its arguments through to ``gsrm score``
SCRIPTS = ["decode", "decompose", "describer_dev", "engines", "load", "openvino_parity",
           "segment", "train_step"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_exits_cleanly(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(f"benchmarks.{name}")
    with pytest.raises(SystemExit) as exc:
        module.main(["--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize(("name", "argv"), [
    ("engines", ["--data", "/nonexistent/data", "--engines", "decode"]),
    ("openvino_parity", ["--data", "/nonexistent/data"]),
])
def test_missing_data_exits_2(name: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(f"benchmarks.{name}")
    assert module.main(argv) == 2
    assert "/nonexistent/data" in capsys.readouterr().err
