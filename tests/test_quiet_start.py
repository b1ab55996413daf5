"""Start-up of every command: known third-party noise filtered by name, one console line per log event."""

from __future__ import annotations

import io
import logging
import warnings

from hdkd_lightning.cli._common import filter_known_noise, one_console_line_per_event


def test_the_leafspec_deprecation_is_filtered_and_other_future_warnings_are_not():
    from lightning.pytorch.utilities._pytree import _tree_flatten

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # nothing hidden by "already shown once" registries
        filter_known_noise()
        _tree_flatten(1)  # Lightning builds a LeafSpec here
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, from our own code", FutureWarning, stacklevel=1)
    texts = [str(w.message) for w in caught]
    assert len(texts) == 1 and texts[0].endswith("from our own code")


def test_the_litlogger_tip_is_dropped_and_other_lightning_info_is_kept(caplog):
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    filter_known_noise()
    with caplog.at_level(logging.INFO):
        rank_zero_info("💡 Tip: For seamless cloud logging and experiment tracking, try installing "
                       "[litlogger](https://pypi.org/project/litlogger/) to enable LitLogger")
        rank_zero_info("GPU available: False, used: False")
    messages = [r.getMessage() for r in caplog.records]
    assert not any("litlogger" in m for m in messages)
    assert "GPU available: False, used: False" in messages


def test_the_root_console_skips_what_lightning_prints_itself_and_file_only_records(tmp_path):
    import lightning  # noqa: F401 - gives the "lightning" logger its own console handler

    root = logging.getLogger()
    console = io.StringIO()
    handlers = [logging.StreamHandler(console), logging.FileHandler(tmp_path / "job.log")]  # as Hydra's job logging
    old_level = root.level
    for h in handlers:
        root.addHandler(h)
    root.setLevel(logging.INFO)
    try:
        one_console_line_per_event()
        one_console_line_per_event()  # idempotent: one filter per handler
        assert sum(len(h.filters) for h in handlers) == 1
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info("Seed set to 0")
        logging.getLogger("hdkd_lightning").info("our own line")
        logging.getLogger("hdkd_lightning").error("DataError: bad", extra={"file_only": True})
    finally:
        for h in handlers:
            root.removeHandler(h)
            h.close()
        root.setLevel(old_level)
    assert console.getvalue().splitlines() == ["our own line"]
    assert (tmp_path / "job.log").read_text().splitlines() == ["Seed set to 0", "our own line", "DataError: bad"]


def test_the_onnx_exporters_info_narration_is_off_and_its_warnings_and_chosen_levels_stay():
    from hdkd_lightning.cli._common import _EXPORTER_LOGGERS

    loggers = {name: logging.getLogger(name) for name in _EXPORTER_LOGGERS}
    saved = {name: logger.level for name, logger in loggers.items()}
    try:
        for logger in loggers.values():
            logger.setLevel(logging.NOTSET)
        loggers["onnxscript"].setLevel(logging.DEBUG)  # as hydra.verbose=onnxscript sets it: kept
        filter_known_noise()
        # a pass of onnx_ir as torch.onnx runs it: "Removed 59 unused nodes" is INFO
        step = logging.getLogger("onnx_ir.passes.common.unused_removal")
        assert not step.isEnabledFor(logging.INFO) and step.isEnabledFor(logging.WARNING)
        assert logging.getLogger("onnxscript.optimizer._constant_folding").isEnabledFor(logging.DEBUG)
    finally:
        for name, logger in loggers.items():
            logger.setLevel(saved[name])
