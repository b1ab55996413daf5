"""The shared file helpers: crash-safe writes and plain values."""

import json

import pytest
from omegaconf import OmegaConf

from hdkd_lightning.files import atomic_write, to_plain, write_json_atomic


def test_atomic_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text('{"old": true}')

    def crash(fh):
        fh.write('{"half": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, crash)
    assert target.read_text() == '{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_write_json_atomic_is_strict_json(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"x": 1, "p": tmp_path})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1, "p": str(tmp_path)}
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "b.json", {"x": float("nan")})
    assert not (tmp_path / "b.json").exists()


def test_to_plain_resolves_containers_and_passes_the_rest():
    cfg = OmegaConf.create({"a": 1, "b": "${a}", "c": [1, {"d": "${a}"}]})
    assert to_plain(cfg) == {"a": 1, "b": 1, "c": [1, {"d": 1}]}
    assert to_plain(cfg.c) == [1, {"d": 1}]
    assert to_plain(3) == 3
