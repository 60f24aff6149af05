"""The acceptance test of tasks as units: a new task type is ONE module (here, the class below)
plus a protocol section, and it appears in the Result, the report tables and the console summary
without any other file changing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import yaml

from meerbench.cli import main, summary_table
from meerbench.engine.evaluate import evaluate
from meerbench.protocol import load_protocol
from meerbench.registry import TASKS
from meerbench.results import read_result
from meerbench.schema import Fields
from meerbench.tasks import Cell, Context, Metric, Outcome, Plan, Section, Task, register_task

# ----------------------------------------------------------------------------- the new task type

BRIGHTNESS = Metric("brightness", "quality", "Brightness", "%", True, order=(0.0,))


@dataclass(frozen=True)
class QualityConfig:
    masked: bool = True


class Quality(Task):
    """Mean brightness of the protocol's masked (or unmasked) images, in [0, 1]."""

    name = "quality"

    def parse(self, fields: Fields) -> QualityConfig:
        return QualityConfig(fields.get("masked", bool, True))

    def plan(self, config: QualityConfig, dataset) -> Plan:
        return Plan(np.array([i for i, s in enumerate(dataset.samples)
                              if s.masked == config.masked], np.int64))

    def run(self, config: QualityConfig, plan: Plan, ctx: Context) -> Outcome:
        from meerbench.data.images import read_rgb

        if not len(plan.images):
            return Outcome(Section.skipped("no such images"))
        values = [read_rgb(ctx.dataset.samples[i].path).mean() / 255 for i in plan.images]
        return Outcome(Section(values={"brightness": float(np.mean(values)),
                                       "n_images": len(values)}))

    def cells(self, section: Section) -> Iterator[tuple[str, Metric, Cell]]:
        if section.ok:
            yield self.name, BRIGHTNESS, Cell(section.values["brightness"])


# ----------------------------------------------------------------------------- the test


@pytest.fixture()
def quality_task():
    task = register_task(Quality())
    yield task
    TASKS.remove(task.name)


@pytest.fixture()
def quality_protocol(tiny_protocol):
    data = yaml.safe_load(tiny_protocol.read_text())
    data["tasks"] = {"verification": data["tasks"]["verification"], "quality": {"masked": True}}
    tiny_protocol.write_text(yaml.safe_dump(data, sort_keys=False))
    return tiny_protocol


def test_a_new_task_type_reaches_result_report_and_console(quality_task, quality_protocol,
                                                           tmp_path, capsys):
    proto = load_protocol(quality_protocol)
    assert list(proto.tasks) == ["verification", "quality"]
    assert proto.tasks["quality"] == QualityConfig(masked=True)

    out = tmp_path / "results"
    result = evaluate("pixels", proto, out_dir=out, progress=False).to_dict()
    section = result["metrics"]["quality"]
    assert section["status"] == "ok" and 0 < section["brightness"] < 1
    assert section["n_images"] == 20 * 4
    assert result["protocol"]["config"]["tasks"]["quality"] == {"masked": True}
    assert read_result(out / "pixels__tiny.json")["metrics"]["quality"] == section

    assert main(["report", str(out), "--no-plots", "--out", str(tmp_path / "report")]) == 0
    tables = (tmp_path / "report" / "tables.md").read_text()
    assert "### Quality on tiny v1 (%)" in tables
    assert f"| pixels | **{100 * section['brightness']:.2f}** |" in tables
    assert "quality,brightness,Brightness" in (tmp_path / "report" / "tables.csv").read_text()

    console = summary_table(result)
    assert f"quality  Brightness: {100 * section['brightness']:.2f}%" in console
    capsys.readouterr()


def test_an_unknown_task_section_is_refused_and_a_taken_name_too(quality_protocol):
    from meerbench.errors import ConfigError, ProtocolError

    with pytest.raises(ProtocolError, match="unknown field 'tasks.quality'"):
        load_protocol(quality_protocol)
    register_task(Quality())
    try:
        with pytest.raises(ConfigError, match="registered twice"):
            register_task(Quality())
    finally:
        TASKS.remove("quality")


def test_a_skipped_section_keeps_its_reason_and_old_results_still_read():
    old = {"skipped": "pixels does not restore faces"}
    section = Section.from_dict(old)
    assert (section.status, section.reason, section.values) == (
        "skipped", "pixels does not restore faces", {})
    assert section.to_dict() == {"status": "skipped", "reason": "pixels does not restore faces"}
    assert Section.from_dict({"psnr": {"mean": 20.0}}).status == "ok"
    assert json.loads(json.dumps(Section(values={"x": 1}).to_dict())) == {"x": 1, "status": "ok"}
