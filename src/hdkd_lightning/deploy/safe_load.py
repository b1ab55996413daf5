"""Reading exported networks that a user passes in: ``.pt2`` programs and ``.onnx`` models.

These files come from anywhere, so they are read as data only; one that could run code or reach
another file is refused with a :class:`~hdkd_lightning.errors.CheckpointError` naming it.

``.pt2`` (:func:`load_pt2`). ``torch.export.load`` is not safe on a hostile archive: it unpickles
sample inputs with ``weights_only=False`` when the safe read fails, unpickles "pickled" weights and
constants outright, loads AOTInductor shared libraries, builds shape expressions with
``sympy.sympify`` (``eval``), resolves graph targets by name (any ``torch.*`` callable) and
``exec``s the guard code recorded in the program when ``.module()`` is called. So the archive is
first checked against what ``torch.export.save`` writes for a plain network (the only kind
``hdkd-export`` makes), and only then handed to ``torch.export.load``, from the same bytes:

* members: one folder; the model ``model`` only; raw tensor payloads; no compiled code, pickled
  objects or extra files;
* every payload is a raw tensor (``use_pickle`` false); the sample inputs load with
  ``torch.load(weights_only=True)`` exactly as torch first tries them (so its unsafe fallback never
  runs) and are one tuple of tensors;
* the program (JSON): no guard code; every graph node calls an ``aten`` / ``prims`` operator that
  touches no file, or one of the symbolic-size operators; every shape expression is made of
  SymPy's arithmetic only; input and output specs are tuples, lists and dicts (pytree imports the
  module other containers name); names are plain (they are pasted into generated Python code);
  inputs are tensors.

``.onnx`` (:func:`onnx_model_bytes`): parsed with ``onnx`` (protobuf, no code) and refused when
a tensor is stored in an external data file (``hdkd-export`` never writes one, and such a path
could name any file); ONNX Runtime then gets the checked bytes, not the path.
"""

from __future__ import annotations

import io
import json
import re
import tokenize
import zipfile
from pathlib import Path
from typing import Any, Iterator, Union

import torch

from hdkd_lightning.errors import CheckpointError

__all__ = ["load_pt2", "onnx_model_bytes"]

#: members of a plain exported program (``torch.export.save``), inside the archive's one folder
_PT2_MEMBERS = frozenset({
    "archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id",
    "models/model.json", "data/sample_inputs/model.pt",
    "data/weights/model_weights_config.json", "data/constants/model_constants_config.json",
})
_PT2_REQUIRED = _PT2_MEMBERS - {".data/serialization_id"}
_PT2_PAYLOAD = re.compile(r"data/weights/weight_\d+|data/constants/tensor_\d+")

#: the symbolic-size operators torch.export serialises by name (``_SYM_OPS`` of its serialiser)
_SYM_OP_TARGETS = frozenset({
    "_operator.add", "_operator.and_", "_operator.eq", "_operator.floordiv", "_operator.ge", "_operator.gt",
    "_operator.le", "_operator.lshift", "_operator.lt", "_operator.mod", "_operator.mul", "_operator.ne",
    "_operator.neg", "_operator.or_", "_operator.pos", "_operator.pow", "_operator.rshift", "_operator.sub",
    "_operator.truediv", "math.trunc", "torch._sym_sqrt", "torch.sym_float", "torch.sym_int", "torch.sym_ite",
    "torch.sym_max", "torch.sym_min", "torch.sym_not",
})
_OP_TARGET = re.compile(r"torch\.ops\.(aten|prims)\.(\w+)\.(\w+)")

#: names a shape expression may use: SymPy's arithmetic and torch's size functions (the ``locals`` of
#: torch's ``sympify`` call), symbol assumptions, and symbols such as ``s77``
_SYMPY_NAMES = frozenset({
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Abs", "Eq", "Ne", "Lt", "Le",
    "Gt", "Ge", "And", "Or", "Not", "oo", "Infinity", "NegativeInfinity", "true", "false", "True", "False",
    "floor", "ceiling", "sqrt", "precision",
    "integer", "positive", "negative", "nonnegative", "nonpositive", "real", "finite", "zero",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
    "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator",
    "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity",
})
_SYMBOL = re.compile(r"[a-z]+\d+")
_EXPR_STRING = re.compile(r"""(['"])([a-z]+\d+|[-+]?\d[\d.e+\-]*)\1""")
_EXPR_OPS = frozenset({"(", ")", ",", "=", "+", "-", "*", "/", "//", "**", "%", "<", ">", "<=", ">=", "==", "!="})
_EXPR_CHARS = re.compile(r"""[A-Za-z0-9_ ().,=+\-*/%<>!'"]*""")

#: fields of the program that are free text torch never turns into code (stack traces, module paths,
#: JSON it parses plainly, string arguments of operators, which it writes with repr)
_FREE_TEXT = frozenset({"stack_trace", "nn_module_stack", "source_fn_stack", "torch_fn", "custom", "as_string",
                        "as_strings"})
#: pytree containers an input or output spec may use (others import the modules their context names)
_SPEC_TYPES = frozenset({None, "builtins.tuple", "builtins.list", "builtins.dict"})
#: every other string: names, dotted attribute paths, versions (FX pastes names into generated code)
_PLAIN = re.compile(r"[A-Za-z0-9_.+\-:]*")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _refused(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path}: refused to load: {why}. A .pt2 file can carry code that torch.export.load "
                           f"runs, so only plain programs as hdkd-export writes them are read")


def load_pt2(path: Union[str, Path]) -> "torch.export.ExportedProgram":
    """The exported program of a ``.pt2`` file, loaded only after the checks of the module docstring."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such .pt2 file; write one with hdkd-export format=pt2")
    data = path.read_bytes()  # checked and loaded from these bytes: the file cannot change in between
    reader = _pt2_reader(path, data)
    for config, prefix in (("data/weights/model_weights_config.json", "weight_"),
                           ("data/constants/model_constants_config.json", "tensor_")):
        _check_payloads(path, reader, config, prefix)
    _check_sample_inputs(path, reader.get_record("data/sample_inputs/model.pt"))
    _check_program(path, _json_record(path, reader, "models/model.json"))
    try:
        program = torch.export.load(io.BytesIO(data))
    except Exception as exc:  # a checked archive this torch cannot read (another version's schema, damage)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"{path}: torch {torch.__version__} cannot load this program ({type(exc).__name__}: "
                              f"{first[:200]}); export it again with hdkd-export format=pt2") from None
    _check_loaded(path, program)
    return program


def _pt2_reader(path: Path, data: bytes):
    """torch's own reader of the archive (the one torch.export.load uses), once its layout is checked."""
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except (zipfile.BadZipFile, ValueError):
        raise _refused(path, "it is not a zip archive (torch.export.save writes one)") from None
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1 or any("/" not in name for name in names) or len(set(names)) != len(names):
        raise _refused(path, "its members are not one folder with each name once, as torch.export.save writes")
    members = {name.split("/", 1)[1] for name in names}
    try:
        reader = torch._C.PyTorchFileReader(io.BytesIO(data))
        records = set(reader.get_all_records())
    except RuntimeError as exc:
        raise _refused(path, f"torch cannot read the archive ({str(exc).splitlines()[0][:200]})") from None
    if records != members:  # Python's zip reader and torch's would see different files
        raise _refused(path, "its zip directory lists different members to Python and to torch")
    other = sorted(m for m in members if m not in _PT2_MEMBERS and not _PT2_PAYLOAD.fullmatch(m))
    if other:
        raise _refused(path, f"it holds {other[0]}" + (f" and {len(other) - 1} more member(s)" if len(other) > 1 else "")
                       + ", which a plain exported program has not (compiled code, pickled objects, other models or "
                       "extra files)")
    missing = sorted(_PT2_REQUIRED - members)
    if missing:
        raise _refused(path, f"it lacks {missing[0]}, which torch.export.save writes")
    return reader


def _json_record(path: Path, reader, name: str) -> Any:
    try:
        return json.loads(reader.get_record(name))
    except (ValueError, RecursionError):
        raise _refused(path, f"its {name} is not valid JSON") from None


def _check_payloads(path: Path, reader, config: str, prefix: str) -> None:
    """Every weight and constant is a raw tensor payload of the archive (never a pickle)."""
    entries = _json_record(path, reader, config)
    entries = entries.get("config") if isinstance(entries, dict) else None
    if not isinstance(entries, dict):
        raise _refused(path, f"its {config} has no 'config' mapping")
    folder = config.rsplit("/", 1)[0] + "/"
    members = set(reader.get_all_records())
    for fqn, entry in entries.items():
        name = entry.get("path_name") if isinstance(entry, dict) else None
        if (not isinstance(name, str) or entry.get("use_pickle") is not False or not name.startswith(prefix)
                or folder + name not in members):
            raise _refused(path, f"its {config} entry {str(fqn)[:80]!r} is not a raw tensor of the archive "
                                 f"(pickled weights and objects are unpickled with code allowed)")
    _check_names(path, entries, config)


def _check_sample_inputs(path: Path, raw: bytes) -> None:
    """Read the way torch first reads them (no ``map_location``), so that its ``weights_only=False``
    fallback is never reached: what loads here loads there on the first try."""
    if not raw:
        return
    try:
        sample = torch.load(io.BytesIO(raw), weights_only=True)
    except Exception:
        raise _refused(path, "its sample inputs (data/sample_inputs/model.pt) are not plain tensors; torch.export.load "
                             "would unpickle them with code allowed") from None
    if not (isinstance(sample, tuple) and len(sample) == 2 and isinstance(sample[0], tuple)
            and all(isinstance(t, torch.Tensor) for t in sample[0]) and sample[1] == {}):
        raise _refused(path, "its sample inputs are not one tuple of tensors")


def _check_program(path: Path, program: Any) -> None:
    if not isinstance(program, dict) or not isinstance(program.get("graph_module"), dict):
        raise _refused(path, "its models/model.json is not an exported program")
    if program.get("guards_code"):
        raise _refused(path, "it records guard code, which torch runs with exec")
    module = program["graph_module"]
    graph = module.get("graph") if isinstance(module.get("graph"), dict) else {}
    if module.get("treespec_namedtuple_fields") or graph.get("custom_obj_values"):
        raise _refused(path, "it records named-tuple types or custom objects, which a plain network has not")
    if not all(isinstance(i, dict) and set(i) == {"as_tensor"} for i in graph.get("inputs") or []):
        raise _refused(path, "its graph takes inputs other than tensors")
    try:
        _check_names(path, program, "models/model.json")
    except RecursionError:
        raise _refused(path, "its models/model.json is nested too deeply") from None


def _check_names(path: Path, obj: Any, where: str, key: str = "") -> None:
    """Walk the JSON: graph nodes, shape expressions and every string (see the module docstring)."""
    if isinstance(obj, dict):
        if "target" in obj and "inputs" in obj and not _allowed_target(obj["target"]):
            raise _refused(path, f"its graph calls {str(obj['target'])[:120]!r}, which is not an operator of a plain "
                                 f"network")
        for k, v in obj.items():
            if not _PLAIN.fullmatch(str(k)):
                raise _refused(path, f"its {where} has the key {str(k)[:80]!r}")
            if k == "expr_str":
                _check_expression(path, v)
            elif k in ("in_spec", "out_spec"):
                _check_treespec(path, v)
            elif not (k == "target" and "inputs" in obj):
                _check_names(path, v, where, k)
    elif isinstance(obj, list):
        for v in obj:
            _check_names(path, v, where, key)
    elif isinstance(obj, str):
        if _CONTROL.search(obj) or (key not in _FREE_TEXT and not _PLAIN.fullmatch(obj)):
            raise _refused(path, f"its {where} has {key or 'a value'} = {obj[:80]!r}, not a plain name")


def _allowed_target(target: Any) -> bool:
    if target in _SYM_OP_TARGETS:
        return True
    match = _OP_TARGET.fullmatch(target) if isinstance(target, str) else None
    if match is None:
        return False
    try:
        op = getattr(getattr(getattr(torch.ops, match[1]), match[2]), match[3])
        arguments = op._schema.arguments
    except (AttributeError, RuntimeError):
        return False
    # aten.from_file and aten.save take a file name: an operator that reaches the file system is refused
    return not any("str" in str(a.type) and re.search("file|path", a.name) for a in arguments)


def _check_expression(path: Path, expr: Any) -> None:
    """Torch rebuilds shape expressions with ``sympy.sympify``, which evaluates Python: only SymPy arithmetic
    on symbols and numbers passes (no attribute access, no other names, no strings but symbol names)."""
    ok = isinstance(expr, str) and len(expr) <= 10_000 and _EXPR_CHARS.fullmatch(expr) is not None
    if ok:
        try:
            for tok in tokenize.generate_tokens(io.StringIO(expr).readline):
                if tok.type == tokenize.NAME:
                    ok = tok.string in _SYMPY_NAMES or _SYMBOL.fullmatch(tok.string) is not None
                elif tok.type == tokenize.STRING:
                    ok = _EXPR_STRING.fullmatch(tok.string) is not None
                elif tok.type == tokenize.OP:
                    ok = tok.string in _EXPR_OPS
                else:
                    ok = tok.type in (tokenize.NUMBER, tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER)
                if not ok:
                    break
        except (tokenize.TokenError, SyntaxError):
            ok = False
    if not ok:
        raise _refused(path, f"its shape expression {str(expr)[:80]!r} is not plain arithmetic (torch evaluates it "
                             f"as Python)")


def _check_treespec(path: Path, text: Any) -> None:
    """Torch parses input and output specs with pytree's ``treespec_loads``, which imports the module a
    ``defaultdict`` or enum context names: only tuples, lists and dicts keyed by plain names pass."""
    def plain_node(node: Any) -> bool:
        if not (isinstance(node, dict) and set(node) == {"type", "context", "children_spec"}
                and node["type"] in _SPEC_TYPES and isinstance(node["children_spec"], list)):
            return False
        context = node["context"]
        if isinstance(context, str):
            try:
                context = json.loads(context)
            except ValueError:
                return False
        if context is not None and not (isinstance(context, list) and all(
                isinstance(key, str) and _PLAIN.fullmatch(key) for key in context)):
            return False
        return all(plain_node(child) for child in node["children_spec"])

    try:
        spec = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        spec = None
    if not (isinstance(spec, list) and len(spec) == 2 and isinstance(spec[0], int) and plain_node(spec[1])):
        raise _refused(path, f"its input or output spec {str(text)[:80]!r} holds containers other than tuples, lists "
                             f"and dicts (torch would import the modules it names)")


def _check_loaded(path: Path, program) -> None:
    """The graph torch built: operators and symbolic-size functions only (a second look, after loading)."""
    for node in program.graph.nodes:
        target = node.target
        if node.op in ("placeholder", "get_attr", "output"):
            continue
        name = f"{getattr(target, '__module__', '')}.{getattr(target, '__name__', '')}"
        if node.op != "call_function" or not (
                (isinstance(target, torch._ops.OpOverload) and target.namespace in ("aten", "prims"))
                or name in _SYM_OP_TARGETS):
            raise _refused(path, f"its graph has a {node.op} node on {target!r}")


def onnx_model_bytes(path: Union[str, Path]) -> bytes:
    """The bytes of an ``.onnx`` file whose tensors are all inside it (see the module docstring)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such .onnx file; write one with hdkd-export format=onnx")
    data = path.read_bytes()
    try:
        model = onnx.load_model_from_string(data)  # protobuf only: external data files are not opened
    except Exception:
        raise CheckpointError(f"{path}: not an ONNX model (it does not parse); write one with hdkd-export "
                              f"format=onnx") from None
    external = [t.name or "(unnamed)" for t in _onnx_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise CheckpointError(f"{path}: refused to load: tensor {external[0]!r} ({len(external)} in all) is stored in "
                              f"an external data file, which could name any file on this machine; hdkd-export keeps "
                              f"every tensor inside the .onnx file")
    return data


def _onnx_tensors(model) -> Iterator[Any]:
    """Every tensor of an ONNX model: initializers and node attributes, in all subgraphs and functions."""
    graphs, nodes = [model.graph], [n for f in model.functions for n in f.node]
    while graphs or nodes:
        if graphs:
            graph = graphs.pop()
            yield from graph.initializer
            for sparse in graph.sparse_initializer:
                yield from (sparse.values, sparse.indices)
            nodes.extend(graph.node)
            continue
        for attr in nodes.pop().attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield from (attr.sparse_tensor.values, attr.sparse_tensor.indices)
            for sparse in attr.sparse_tensors:
                yield from (sparse.values, sparse.indices)
            if attr.HasField("g"):
                graphs.append(attr.g)
            graphs.extend(attr.graphs)
