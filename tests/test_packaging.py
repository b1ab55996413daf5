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


def test_import_is_light_and_the_networks_register_when_timm_is_imported():
    # import hdkd_lightning imports no torch or timm (every command's --help starts without them); the networks
    # still register with timm, the moment timm is imported (hdkd_lightning/__init__.py)
    code = ("import sys, hdkd_lightning; "
            "print(sorted(m for m in ('torch', 'timm', 'lightning', 'hydra', 'albumentations', 'hdkd_lightning.data', "
            "'hdkd_lightning.lit', 'hdkd_lightning.models') if m in sys.modules)); "
            "import timm; print(timm.list_models('hdkd_*'), 'hdkd_lightning.models' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["[]", "['hdkd_student', 'hdkd_student_distilled', 'hdkd_teacher'] True"]


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

    from hdkd_lightning.errors import ConfigError
    from hdkd_lightning.pipeline.build import _check_optional_loggers

    loggers = OmegaConf.create({"tensorboard": {"_target_": "lightning.pytorch.loggers.TensorBoardLogger"}})
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'hdkd-lightning\[tensorboard\]'"):
        _check_optional_loggers(loggers)
    _check_optional_loggers(OmegaConf.create({"csv": {"_target_": "lightning.pytorch.loggers.CSVLogger"}}))


def test_the_errors_module_imports_nothing_heavy():
    # loaded from its file, without the package's __init__ (which only waits for timm, but is not under test):
    # what hdkd_lightning.errors itself imports, the reason every layer can import it without a cycle
    path = REPO / "src" / "hdkd_lightning" / "errors.py"
    code = ("import importlib.util as u, sys; s = u.spec_from_file_location('errors', sys.argv[1]); "
            "s.loader.exec_module(u.module_from_spec(s)); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'numpy', 'hydra', 'omegaconf', 'lightning', 'hdkd_lightning')))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _import_graph():
    """module -> the package modules it imports, at the top or inside a function (lazy imports count too)."""
    import ast

    src = REPO / "src"
    modules = {}
    for path in (src / "hdkd_lightning").rglob("*.py"):
        parts = path.relative_to(src).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, up level - 1 packages
                    base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
                targets |= {base} | {f"{base}.{a.name}" for a in node.names}  # a name may be a submodule
        # a module's own packages are imported before it, so importing them closes no loop
        graph[name] = {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
    return graph


def _cycles(graph):
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while not group or v not in group:
                group.add(stack.pop())
            on_stack.difference_update(group)
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_no_import_cycles_between_modules():
    graph = _import_graph()
    # the check itself: these edges exist, so it reads imports inside functions and from packages
    assert "hdkd_lightning.sweeps" in graph["hdkd_lightning.config"]  # lazy, in register_resolvers
    assert "hdkd_lightning.models" in graph["hdkd_lightning.checkpoints.format"]  # lazy, in network_from_checkpoint
    assert _cycles(graph) == [], "modules importing each other (make one side import hdkd_lightning.errors or move code)"
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_evaluation_never_reaches_lit():
    """lit imports evaluation (validation metrics, each image once); never the other way, not even
    through another module, so evaluation's files and metrics stand without the training modules."""
    graph = _import_graph()
    assert "hdkd_lightning.evaluation.metrics" in graph["hdkd_lightning.lit.base"]  # the allowed direction is seen
    reached = {}
    for module in (m for m in graph if m == "hdkd_lightning.evaluation" or m.startswith("hdkd_lightning.evaluation.")):
        seen, todo = set(), [module]
        while todo:
            for target in graph[todo.pop()] - seen:
                seen.add(target)
                todo.append(target)
        lit = sorted(t for t in seen if t == "hdkd_lightning.lit" or t.startswith("hdkd_lightning.lit."))
        if lit:
            reached[module] = lit
    assert reached == {}, "evaluation modules importing lit (directly or through others)"
