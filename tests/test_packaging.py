"""The wheel carries the Hydra configs, and importing the package stays light."""

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_every_config(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(tmp_path)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("hdkd_lightning-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.split("hdkd_lightning/conf/", 1)[1] for n in names if n.startswith("hdkd_lightning/conf/")}
    in_repo = {str(p.relative_to(REPO / "conf")) for p in (REPO / "conf").rglob("*.yaml")}
    assert in_repo and in_repo <= shipped
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    out = subprocess.run([sys.executable, "-c", "import hdkd_lightning._paths as p; print(p.config_dir())"],
                         cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(site / "hdkd_lightning" / "conf")


def test_import_does_not_pull_in_lightning_or_data():
    code = ("import sys, hdkd_lightning; "
            "print(sorted(m for m in ('lightning', 'hydra', 'albumentations', 'hdkd_lightning.data', 'hdkd_lightning.lit') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# declared for what they do inside other libraries, never imported by name: Hydra finds its plugins,
# torch.onnx runs onnxscript, optuna's study storage runs on SQLAlchemy / alembic (pinned, see pyproject)
USED_INDIRECTLY = {"hydra-optuna-sweeper", "hydra-submitit-launcher", "onnxscript", "sqlalchemy", "alembic",
                   "tensorboard"}  # tensorboard: Lightning's TensorBoardLogger (logger=tensorboard)


def _name(requirement: str) -> str:
    import re

    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_every_declared_dependency_is_imported_and_every_import_is_declared():
    import ast
    from importlib.metadata import packages_distributions

    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    extras = {_name(r) for name, reqs in project["optional-dependencies"].items() if name not in ("all", "dev")
              for r in reqs}
    modules = set()
    for path in (REPO / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    dists = packages_distributions()
    imported = {d.lower().replace("_", "-") for m in modules for d in dists.get(m, [])}
    third_party = {m for m in modules if m in dists and m != "hdkd_lightning"}
    assert not (declared | extras | USED_INDIRECTLY) - imported - USED_INDIRECTLY, "declared but never imported"
    undeclared = {m for m in third_party
                  if not {d.lower().replace("_", "-") for d in dists[m]} & (declared | extras)}
    assert not undeclared, undeclared


def test_a_missing_optional_extra_says_how_to_install_it(monkeypatch):
    import importlib.util

    import pytest
    from omegaconf import OmegaConf

    from hdkd_lightning.config import ConfigError
    from hdkd_lightning.pipeline.build import _check_optional_loggers

    loggers = OmegaConf.create({"tensorboard": {"_target_": "lightning.pytorch.loggers.TensorBoardLogger"}})
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'hdkd-lightning\[tensorboard\]'"):
        _check_optional_loggers(loggers)
    _check_optional_loggers(OmegaConf.create({"csv": {"_target_": "lightning.pytorch.loggers.CSVLogger"}}))
