"""Issue 12 item 10: a training config that is not UTF-8 or not YAML is one line naming the file
(exit 2), not a traceback."""

from __future__ import annotations

from tests.test_trust_cli import cli_error


def test_bad_training_config_text_names_the_file(capsys, tmp_path):
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    err = cli_error(capsys, "train", "--config", latin1)
    assert f"{latin1}, line 1: not UTF-8 text" in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [\n")
    err = cli_error(capsys, "train", "--config", broken)
    assert f"{broken}: not valid YAML" in err
