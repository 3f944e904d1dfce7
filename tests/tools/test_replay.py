"""tools.replay's command line (scripts/demo FILE...)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.replay import main


def test_a_missing_file_is_a_clear_usage_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-capture.json"
    with pytest.raises(SystemExit) as caught:
        main([str(missing)])
    assert caught.value.code == 2
    assert f"no such file: {missing}" in capsys.readouterr().err
