"""What every Hydra command does around its job: start-up, a pre-check of the command line, help,
and one clear error line (exit status 2) for every user mistake.

Before Hydra runs the job, :func:`precheck` composes the config with the given overrides (for a
sweep, with the first value of each swept key) and turns every composition problem into one line:
an unknown group option lists the valid ones; an unknown key names the closest valid key; a
missing mandatory value says what to pass; ``--flag value`` (argparse / timm habit) is refused
with the ``key=value`` to write instead, under its full dotted key (``--max_epochs 2`` ->
``trainer.max_epochs=2``). Errors raised inside the job (bad data, bad values,
refused checkpoints) are unwrapped from Hydra's instantiation errors and printed the same way;
their explanation may continue on the following lines (e.g. a dataset's expected layout). Only
the user-error types of :mod:`hdkd_lightning.errors` are reported so; any other exception is a
bug and keeps its traceback (exit status 1).

A start that fails before training leaves no run folder behind: the folder Hydra made for the
failed job is removed when it holds nothing but Hydra's own files (``.hydra/``, the log,
``run.json``); a folder that holds anything else (checkpoints of a run being resumed) is kept.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, List, Sequence, Tuple

from hdkd_lightning.errors import EXIT_USER_ERROR, UserError, find_user_error

log = logging.getLogger("hdkd_lightning")

#: flags Hydra itself understands (everything else that starts with '-' is a mistake)
HYDRA_FLAGS = {"-m", "--multirun", "-h", "--help", "--hydra-help", "-c", "--cfg", "-p", "--package", "-cd",
               "--config-dir", "-cn", "--config-name", "-cp", "--config-path", "--info", "-i", "--run", "-r",
               "--resolve", "--shell-completion", "-sc", "--version", "--experimental-rerun"}
_FLAGS_WITH_VALUE = {"-c", "--cfg", "-p", "--package", "-cd", "--config-dir", "-cn", "--config-name", "-cp",
                     "--config-path", "--info", "-i", "-sc", "--shell-completion", "--experimental-rerun"}
_MISSING_HINTS = {"ckpt_path": "pass ckpt_path=<checkpoint file>", "input": "pass input=<image file or folder>",
                  "output": "pass output=<file>", "output_dir": "pass output_dir=<folder>",
                  "data.root": "pass data.root=<dataset folder>"}


def prepare_process() -> None:
    """Allocator tuning (see hdkd_lightning._runtime), the config resolvers and the third-party noise
    filters (:func:`filter_known_noise`), once per process."""
    from hdkd_lightning._runtime import configure_allocator
    from hdkd_lightning.config import register_resolvers

    configure_allocator()
    register_resolvers()
    filter_known_noise()


#: Lightning's logger of ``rank_zero_info`` (the tip below is logged there)
_LIGHTNING_RANK_ZERO_LOGGER = "lightning.pytorch.utilities.rank_zero"


class _DropLitLoggerTip(logging.Filter):
    """Lightning 2.6 logs at every ``Trainer`` construction without a LitLogger: "💡 Tip: For seamless
    cloud logging and experiment tracking, try installing [litlogger](...)": an advertisement, not news
    about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip: For seamless cloud logging")


#: the loggers of onnxscript and onnx_ir (torch.onnx's dynamo exporter runs them on every ONNX export)
_EXPORTER_LOGGERS = ("onnxscript", "onnx_ir")


def filter_known_noise() -> None:
    """Silence the third-party messages every run printed that say nothing about it, each by its exact
    text and source, or (the ONNX exporter's step-by-step INFO lines) by logger name and level; everything
    else, warnings of the same libraries included, stays visible."""
    import warnings

    # torch 2.14 deprecated LeafSpec, which Lightning 2.6's own pytree helper still builds
    # (lightning/pytorch/utilities/_pytree.py, on every batch it moves): "`isinstance(treespec, LeafSpec)` is
    # deprecated, use `isinstance(treespec, TreeSpec) and treespec.is_leaf()` instead." (FutureWarning)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning, module=r"lightning\.pytorch\.utilities\._pytree")
    rank_zero = logging.getLogger(_LIGHTNING_RANK_ZERO_LOGGER)
    if not any(isinstance(f, _DropLitLoggerTip) for f in rank_zero.filters):
        rank_zero.addFilter(_DropLitLoggerTip())
    # the ONNX exporter's passes narrate their work at INFO, one line per step ("Removed 59 unused nodes",
    # "Replaced initializer 'val_34' with existing initializer 'val_26'", ...): about 125 lines per hdkd-export
    # of a student. Their WARNINGs and errors stay visible; hydra.verbose=[onnxscript,onnx_ir] shows the rest.
    for name in _EXPORTER_LOGGERS:
        exporter = logging.getLogger(name)
        if exporter.level == logging.NOTSET:  # a level set on purpose (hydra.verbose, a user's config) is kept
            exporter.setLevel(logging.WARNING)


class _ConsoleOnce(logging.Filter):
    """On the console handlers Hydra gives the root logger: one console line per event.

    ``import lightning`` gives the ``lightning`` logger a console handler of its own ("INFO: ...") and
    lets its records propagate to the root logger too, where Hydra's console handler printed each a
    second time: those are dropped here (Hydra's file handler still keeps them in the run's log). So is
    a record logged with ``extra={"file_only": True}``: a user error, which :func:`fail` prints itself.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "file_only", False):
            return False
        if record.name == "lightning" or record.name.startswith("lightning."):
            return not any(_is_console(h) for h in logging.getLogger("lightning").handlers)
        return True


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


def one_console_line_per_event() -> None:
    """Add :class:`_ConsoleOnce` to the root logger's console handlers (call after Hydra set up logging:
    each job of a sweep gets new handlers)."""
    for handler in logging.getLogger().handlers:
        if _is_console(handler) and not any(isinstance(f, _ConsoleOnce) for f in handler.filters):
            handler.addFilter(_ConsoleOnce())


def report_error(prog: str, message: str) -> int:
    """Print ``<prog>: error: <first line>`` (and any further lines of ``message``) to stderr; returns 2
    (:data:`hdkd_lightning.errors.EXIT_USER_ERROR`)."""
    first, _, rest = str(message).strip().partition("\n")
    print(f"{prog}: error: {first}", file=sys.stderr)
    if rest:
        print(rest, file=sys.stderr)
    return EXIT_USER_ERROR


def fail(prog: str, message: str) -> None:
    """:func:`report_error`, then exit with status 2."""
    sys.exit(report_error(prog, message))


# -- the command line, before Hydra ------------------------------------------------------------

def check_flags(argv: Sequence[str], config_name: str | None = None) -> None:
    """Refuse ``--name value`` flags Hydra does not know, suggesting the ``key=value`` to write instead.

    With ``config_name`` the suggestion is the full dotted key of the command's config whose last part(s)
    are the flag's name (``--max_epochs 2`` -> ``trainer.max_epochs=2``; several keys are all listed);
    without it, or when no key matches, it is ``name=value``."""
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if not arg.startswith("-"):
            continue
        flag = arg.split("=", 1)[0]
        if flag in HYDRA_FLAGS:
            skip = flag in _FLAGS_WITH_VALUE and "=" not in arg
            continue
        name = flag.lstrip("-").replace("-", "_")
        takes_next = "=" not in arg and i + 1 < len(argv)
        value = arg.split("=", 1)[1] if "=" in arg else (argv[i + 1] if takes_next else "<value>")
        keys = []
        if config_name is not None and not _extra_config_dirs(argv):
            # the rest of the command line, without the flag and the value it took
            rest = [a for j, a in enumerate(argv) if j != i and not (takes_next and j == i + 1)]
            keys = _keys_named(config_name, [a for a in rest if not a.startswith("-")], name)
        pairs = [f"{key}={value}" for key in keys] or [f"{name}={value}"]
        suggestion = pairs[0] if len(pairs) == 1 else f"one of {', '.join(pairs)}"
        raise UserError(f"unknown option {flag}: this command takes Hydra overrides key=value, e.g. {suggestion} "
                        f"(see --help)")


def _keys_named(config_name: str, overrides: Sequence[str], name: str) -> List[str]:
    """Dotted keys of the composed config (Hydra's own left out) equal to ``name`` or ending in ``.name``;
    ``[]`` when the rest of the command line does not compose (that mistake is reported on its own)."""
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.to_container(_compose(config_name, _single_job_overrides(overrides)), resolve=False)
    except Exception:  # noqa: BLE001 - the suggestion is best effort
        return []
    cfg.pop("hydra", None)
    found: List[str] = []

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if path == name or path.endswith(f".{name}"):
                found.append(path)
            if isinstance(value, dict):
                walk(value, path + ".")

    walk(cfg, "")
    return sorted(found, key=lambda k: (k.count("."), k))  # the shallowest first: the likeliest meant


def _single_job_overrides(overrides: Sequence[str]) -> List[str]:
    """A sweep's overrides with one value per swept key (its first), to check that the config composes."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, RangeSweep

    out = []
    for text, parsed in zip(overrides, OverridesParser.create().parse_overrides(list(overrides))):
        if not parsed.is_sweep_override():
            out.append(text)
            continue
        sweep = parsed.value()
        if isinstance(sweep, ChoiceSweep) and sweep.list:
            first = sweep.list[0]
        elif isinstance(sweep, RangeSweep):
            first = sweep.start
        else:  # interval(...) etc. of an optimiser's search space: checked by the sweeper
            continue
        prefix = {"ADD": "+", "FORCE_ADD": "++", "DEL": "~"}.get(parsed.type.name, "")
        out.append(f"{prefix}{parsed.get_key_element()}={first}")
    return out


def _composition_message(exc: BaseException, config_name: str, overrides: Sequence[str]) -> str:
    from hydra.errors import MissingConfigException

    text = str(exc).strip()
    if isinstance(exc, MissingConfigException) and getattr(exc, "options", None) is not None:
        group, _, wanted = (exc.missing_cfg_file or "?/?").rpartition("/")
        choices = sorted(o for o in exc.options if not o.startswith("_"))  # _name: a shared defaults file
        return f"{group}={wanted} is not an option of {group}; choose one of: {', '.join(choices)}"
    if "Could not override '" in text or "Could not append to config" in text or "Key '" in text:
        key = text.split("'")[1] if "'" in text else ""
        if "Could not override" in text and key:
            return _unknown_key_message(config_name, overrides, key)
    return text.splitlines()[0] if text else type(exc).__name__


def _unknown_key_message(config_name: str, overrides: Sequence[str], key: str) -> str:
    parent, _, leaf = key.rpartition(".")
    rest = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != key]
    try:
        cfg = _compose(config_name, rest)
        from omegaconf import OmegaConf

        node = OmegaConf.select(cfg, parent) if parent else cfg
        names = [str(k) for k in node.keys()] if hasattr(node, "keys") else []
    except Exception:  # noqa: BLE001 - the suggestion is best effort
        names = []
    if parent and not names:
        return (f"{key} is not a key of this config: {parent} does not exist with these settings (another model, "
                f"data or experiment has it)")
    close = difflib.get_close_matches(leaf, names, n=1, cutoff=0.6)
    where = parent or "the config"
    hint = f"did you mean {parent + '.' if parent else ''}{close[0]}?" if close else f"its keys are: {', '.join(sorted(names))}"
    return f"{key} is not a key of {where}; {hint} (to add a new key on purpose write +{key}=...)"


def _compose(config_name: str, overrides: Sequence[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hdkd_lightning._paths import config_dir

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name, overrides=list(overrides), return_hydra_config=True)


def _extra_config_dirs(argv: Sequence[str]) -> bool:
    return any(a.split("=", 1)[0] in ("-cd", "--config-dir", "-cp", "--config-path", "-cn", "--config-name")
               for a in argv)


def _missing_keys(node, prefix: str = "") -> List[str]:
    """Dotted keys whose value is the mandatory marker ``???`` (Hydra's own keys excluded)."""
    out: List[str] = []
    for key, value in (node.items() if isinstance(node, dict) else []):
        path = f"{prefix}{key}"
        if path == "hydra":
            continue
        if value == "???":
            out.append(path)
        elif isinstance(value, dict):
            out += _missing_keys(value, path + ".")
    return out


def precheck(config_name: str, argv: Sequence[str]) -> None:
    """Compose the config of this command line; any mistake becomes a :class:`UserError` (module docstring)."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    check_flags(argv, config_name)
    if _extra_config_dirs(argv):
        return  # the user's own config folders: Hydra reports on them itself
    overrides = [a for a in argv if not a.startswith("-")]
    try:
        single = _single_job_overrides(overrides)
        cfg = _compose(config_name, single)
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise UserError(_composition_message(exc, config_name, overrides)) from None
    missing = sorted(_missing_keys(OmegaConf.to_container(cfg, resolve=False)))
    if missing:
        hints = "; ".join(f"{k} is required: {_MISSING_HINTS.get(k, f'pass {k}=<value>')}" for k in missing)
        raise UserError(hints)


# -- help ---------------------------------------------------------------------------------------

#: the last line of every command's help: what its exit status means
EXIT_STATUS_LINE = ("Exit status: 0 done; 2 a mistake in the command line, the config or the data (one line says "
                    "what to fix); 1 a bug (a traceback).")


def print_help(prog: str, config_name: str, description: str, examples: Sequence[str],
               groups: Sequence[str] = (), keys: Sequence[Tuple[str, str]] = ()) -> None:
    """``--help`` of a Hydra command: its description, the keys people set most (``key=<value>`` and one line
    each), the config groups and their options, the top-level keys, examples and the exit status. Plain text
    (no markup); composes the config with Hydra and imports nothing else (no torch)."""
    from omegaconf import OmegaConf

    from hdkd_lightning._paths import config_dir

    cfg = _compose(config_name, [])
    lines = [f"usage: {prog} [key=value ...] [group=option ...] [-m]", "", description.strip(), ""]
    if keys:
        lines.append("Keys set most often (key=value):")
        width = max(len(key) for key, _ in keys) + 2
        lines += [f"  {key:<{width}}{explanation}" for key, explanation in keys]
        lines.append("")
    if groups:
        lines.append("Config groups (group=option):")
        for group in groups:
            # a name starting with "_" is a shared defaults file (data/_base.yaml), not a choice
            options = sorted(p.stem for p in (config_dir() / group).glob("*.yaml") if not p.stem.startswith("_"))
            current = (cfg.hydra.runtime.choices or {}).get(group)
            lines.append(f"  {group:<15} {', '.join(options)}" + (f"   (default: {current})" if current else ""))
        lines.append("")
    keys = {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "hydra"
            and (k not in groups)}
    lines.append("Options (key=value; nested keys with dots, e.g. data.batch_size=32):")
    lines += ["  " + line for line in OmegaConf.to_yaml(OmegaConf.create(keys)).rstrip().splitlines()]
    lines += ["", "Examples:"] + [f"  {e}" for e in examples]
    lines += ["", f"Hydra's own flags: {prog} --hydra-help.", EXIT_STATUS_LINE]
    try:
        print("\n".join(lines), flush=True)
    except BrokenPipeError:  # the reader stopped early (--help | head): not an error, and no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit


# -- the decorator ---------------------------------------------------------------------------------

def _remove_failed_run_dir() -> None:
    """Remove this job's run folder if it holds only Hydra's files (see the module docstring)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        out = Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # noqa: BLE001
        return
    if not out.is_dir():
        return
    extra = [p for p in out.iterdir() if p.name != ".hydra" and p.suffix != ".log" and p.name != "run.json"]
    if not extra:
        shutil.rmtree(out, ignore_errors=True)
        if out.parent.name in ("runs", "multiruns"):  # this project's layout: <log_dir>/<task>/runs/<time>
            for parent in (out.parent, out.parent.parent):  # runs/ and the task folder, when now empty
                if any(parent.iterdir()):
                    break
                parent.rmdir()


def hydra_command(config_name: str, description: str = "", examples: Sequence[str] = (),
                  groups: Sequence[str] = (), keys: Sequence[Tuple[str, str]] = ()) -> Callable:
    """Decorate a job ``fn(cfg)`` as a Hydra command reading this package's configs.

    Users add their own configs with ``--config-dir``. See the module docstring for the checks,
    help and errors around the job; ``--help`` is :func:`print_help` of ``description``, ``examples``,
    ``groups`` and ``keys`` (``(key=<value>, one-line explanation)`` pairs).
    """
    import hydra

    from hdkd_lightning._paths import config_dir

    def wrap(fn: Callable) -> Callable:
        prog = f"hdkd-{config_name}"

        @hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")
        @functools.wraps(fn)
        def job(cfg):
            one_console_line_per_event()
            try:
                return fn(cfg)
            except Exception as exc:  # noqa: BLE001 - user errors become one line, the rest propagates
                user = find_user_error(exc)  # the exception itself, or what a Hydra target raised inside it
                if user is None:
                    raise
                # for the run's log file only: fail() prints the console's one line
                log.error("%s: %s", type(user).__name__, str(user).splitlines()[0] if str(user) else "",
                          extra={"file_only": True})
                _remove_failed_run_dir()
                fail(prog, str(user))

        def main() -> None:
            argv = sys.argv[1:]
            if any(a in ("-h", "--help") for a in argv):
                print_help(prog, config_name, description or (fn.__doc__ or ""), examples, groups, keys)
                return
            prepare_process()
            try:
                from hdkd_lightning.cli._overrides import quote_values

                # values Hydra's grammar refuses unquoted (non-ASCII paths, ...) quoted for it, as typed
                argv = sys.argv[1:] = quote_values(argv)
                precheck(config_name, argv)
            except UserError as exc:
                fail(prog, str(exc))
            job()

        return main

    return wrap

