"""What hdkd-export prints: its own lines only (no ONNX exporter narration, no timm loading line), ending with the
files it wrote and their parity. Run in this process, as the command runs, on a small untrained teacher."""

from __future__ import annotations

import logging
import re

import pytest
from tests.app.conftest import tiny_checkpoint

_HYDRA_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+\]\[(?P<logger>[\w.]+)\]\[(?P<level>[A-Z]+)\] - (?P<text>.*)$")


@pytest.fixture
def restored_logging():
    """Hydra's job logging (root handlers) and the exporter levels set by the command, put back afterwards."""
    from hdkd_lightning.cli._common import _EXPORTER_LOGGERS

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in _EXPORTER_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


# onnx: torch.onnx's passes logged ~40 INFO lines for this network; timm: timm's "Loaded  from checkpoint" line,
# naming the parity check's temporary file
@pytest.mark.parametrize("fmt, name", [("onnx", "tiny.onnx"), ("timm", "tiny.pth")])
def test_export_prints_its_own_lines_and_ends_with_what_it_wrote_and_its_parity(fmt, name, tmp_path, monkeypatch,
                                                                                 capfd, restored_logging):
    from hdkd_lightning.cli.export import main

    ckpt = tiny_checkpoint(tmp_path / "tiny.ckpt")
    out = tmp_path / "models" / name
    monkeypatch.setenv("HDKD_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr("sys.argv", ["hdkd-export", f"ckpt_path={ckpt}", f"format={fmt}", f"output={out}",
                                     "parity_images=4"])
    main()
    captured = capfd.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    parsed = [_HYDRA_LINE.match(line) for line in lines]
    # before: about 45 lines for this network (125 for a full-size student), nearly all onnxscript / onnx_ir INFO
    assert 1 <= len(lines) <= 3, lines
    assert all(parsed) and {m["logger"] for m in parsed} == {"hdkd_lightning"}, lines
    last = parsed[-1]["text"]
    assert last.startswith(f"wrote {out} ({fmt} of {ckpt}) and its model card {out}.json; "), last
    diff, tolerance = re.search(r"parity: max \|logit diff\| (\S+) <= (\S+) on 4 random", last).groups()
    assert float(diff) <= float(tolerance) == 1e-4
    assert out.is_file() and (tmp_path / "models" / f"{name}.json").is_file()
