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
