"""Issue 12, untrusted protocols: names that become paths, sets, counts, seeds, caps, encodings."""

import copy

import pytest
import yaml

from meerbench.cli import main
from meerbench.data.dataset import DatasetSpec
from meerbench.data.formats import open_dataset
from meerbench.errors import ProtocolError
from meerbench.metrics.errors import MetricInputError
from meerbench.metrics.identification import IdentificationSettings
from meerbench.metrics.verification import VerificationSettings
from meerbench.protocol import load_protocol, parse_protocol
from tests.conftest import TINY


def patched(**changes):
    """TINY with nested fields replaced: ``patched(**{"tasks.verification.seed": -1})``."""
    data = copy.deepcopy(TINY)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[last] = value
    return data


def write(tmp_path, data, name="p.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("field", "value"), [
    ("id", "../../x"), ("id", "/tmp/abs"), ("id", "a/b"), ("id", ".hidden"), ("id", "a..b"),
    ("id", "a\\b"), ("dataset.name", "../x"), ("dataset.name", "/abs"),
    ("train.name", "../../outside"), ("id", "x" * 129),
])
def test_names_that_become_paths_are_plain_names(tmp_path, field, value):
    path = write(tmp_path, patched(**{field: value}))
    with pytest.raises(ProtocolError) as err:
        load_protocol(str(path))
    msg = str(err.value)
    assert str(path) in msg and f"'{field}'" in msg and repr(value) in msg


def test_plain_names_still_load(tmp_path):
    proto = load_protocol(str(write(tmp_path, patched(id="My_proto-2.1"))))
    assert proto.id == "My_proto-2.1" and proto.train.name == "synthface-tiny-train"


@pytest.mark.parametrize("command", ["prepare", "run"])
def test_cli_refuses_a_traversing_id_and_writes_nothing_outside_out(tmp_path, capsys, command,
                                                                   monkeypatch):
    monkeypatch.setenv("MEERBENCH_HOME", str(tmp_path / "home"))
    out = tmp_path / "a" / "b" / "out"
    out.mkdir(parents=True)
    proto = write(tmp_path / "a", patched(id="../../escaped"))
    args = ([command, str(proto)] if command == "prepare"
            else [command, "--model", "pixels", "--protocol", str(proto)])
    code = main([*args, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "'id'" in err and "../../escaped" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not list(tmp_path.glob("escaped*")) and not list(tmp_path.rglob("*escaped*"))


def test_duplicate_conditions_are_refused_naming_the_value():
    data = patched(**{"tasks.verification.conditions": ["UMR-MP", "MR-MP", "UMR-MP"]})
    with pytest.raises(ProtocolError, match=r"tasks\.verification\.conditions.*'UMR-MP'"):
        parse_protocol(data, "dup.yaml")


def test_duplicate_masking_families_are_refused():
    data = {**copy.deepcopy(TINY), "masking": {"seed": 1, "families": ["surgical", "surgical"]}}
    with pytest.raises(ProtocolError, match=r"masking\.families.*'surgical'"):
        parse_protocol(data, "dup.yaml")


@pytest.mark.parametrize("field", ["tasks.verification.seed", "tasks.identification.seed"])
def test_negative_seed_is_a_protocol_error(field):
    with pytest.raises(ProtocolError, match=rf"{field.replace('.', r'[.]')}.*-1"):
        parse_protocol(patched(**{field: -1}), "seed.yaml")


@pytest.mark.parametrize(("field", "value"), [
    ("n_unmasked", 10**23), ("n_unmasked", 1e23), ("n_unmasked", "1e23"),
    ("n_identities", 10**12), ("n_masked", 10**7),
])
def test_absurd_synthface_counts_are_refused_before_any_work(field, value):
    options = {**TINY["dataset"]["options"], field: value}
    with pytest.raises(ProtocolError) as err:
        open_dataset(DatasetSpec("synthface", "synthface-absurd", options))
    assert f"dataset.options.{field}" in str(err.value)
    if field == "n_identities":
        assert "1,000,000" in str(err.value)


@pytest.mark.parametrize(("section", "setting", "value", "expected"), [
    ("verification", "bootstrap", 10**9, "100,000"),
    ("identification", "bootstrap", 10**9, "100,000"),
    ("verification", "seed", -1, "seed"),
    ("verification", "far_targets", [0.1, 0.01, 0.1], "0.1"),
    ("identification", "ranks", [1, 5, 5], "5"),
    ("identification", "fpir_targets", [0.1, 0.1], "0.1"),
    ("identification", "max_rank", 10**9, "10,000"),
    ("identification", "probe_block", 10**9, "probe_block"),
])
def test_metric_settings_caps_and_sets(section, setting, value, expected):
    data = patched(**{f"metrics.{section}": {setting: value}})
    with pytest.raises(ProtocolError) as err:
        parse_protocol(data, "caps.yaml")
    assert f"metrics.{section}" in str(err.value) and expected in str(err.value)


def test_settings_caps_hold_for_library_callers_too():
    with pytest.raises(MetricInputError, match="100,000"):
        VerificationSettings.from_dict({"bootstrap": 100_001})
    with pytest.raises(MetricInputError, match="100,000"):
        IdentificationSettings(bootstrap=100_001)
    assert VerificationSettings.from_dict({"bootstrap": 100_000}).bootstrap == 100_000


def test_non_utf8_protocol_names_file_and_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(yaml.safe_dump(TINY).encode() + b"citation: Caf\xe9\n")
    with pytest.raises(ProtocolError) as err:
        load_protocol(str(path))
    lines = len(yaml.safe_dump(TINY).splitlines())
    assert f"{path}, line {lines + 1}: not UTF-8" in str(err.value)


def test_protocol_with_bom_loads(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump(TINY).encode())
    assert load_protocol(str(path)).id == "tiny"


def test_unknown_keys_of_mixed_types_are_a_protocol_error_not_a_traceback():
    with pytest.raises(ProtocolError, match="unknown field '1'"):
        parse_protocol({**copy.deepcopy(TINY), 1: "x", "zz": 2}, "keys.yaml")
