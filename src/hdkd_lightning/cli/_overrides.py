"""Command-line values as typed, before Hydra reads them: :func:`quote_values`.

Hydra's override grammar accepts unquoted values of ASCII letters, digits, spaces and a few signs
only: ``input=/tmp/bilder/läsion_ü.jpg`` (any letter outside ASCII), ``input=/scans/scan (1).jpg``
or ``output=/tmp/it's.csv`` stop it with a ``LexerNoViableAltException``. A value Hydra cannot
read is quoted for it here, as the one string the user typed (a quote or backslash inside it
escaped by Hydra's rules), and Hydra then reads exactly that string. A value Hydra can read is
left alone: sweeps (``seed=0,1,2``), lists, ``choice(...)``, interpolations keep their meaning.

A value that cannot be quoted without guessing (a comma or a leading ``[`` / ``{`` together with a
character Hydra refuses: one string, or a sweep, or a list?) is refused with one line that shows
the quoted form to type for one string.
"""

from __future__ import annotations

import re
import shlex
from typing import List, Optional, Sequence

from hdkd_lightning.errors import UserError

__all__ = ["hydra_quote", "quote_values"]

#: Hydra's flags followed by a value of their own (a config name or folder, not an override)
_FLAGS_WITH_VALUE = {"-c", "--cfg", "-p", "--package", "-cd", "--config-dir", "-cn", "--config-name", "-cp",
                     "--config-path", "--info", "-i", "-sc", "--shell-completion", "--experimental-rerun"}
#: an override's key: optional +, ++ or ~, a dotted key, an optional @package
_KEY = re.compile(r"^(\+\+|\+|~)?[A-Za-z_][\w.\-/]*(@[\w.\-/]*)?$")


def hydra_quote(value: str) -> str:
    """``value`` as one single-quoted Hydra string that Hydra reads back unchanged.

    Inside Hydra's quotes a backslash is special only before a quote or at the end: each run of
    ``n`` backslashes before a ``'`` becomes ``2n + 1`` backslashes and the quote, a run of ``n`` at
    the end ``2n``; every other character stays as it is."""
    body = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    body = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, body)
    return f"'{body}'"


def _parses(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        OverridesParser.create().parse_overrides([override])
    except Exception:  # noqa: BLE001 - any refusal of Hydra's parser
        return False
    return True


def _shell(arg: str) -> str:
    """``arg`` as a shell word: in double quotes when nothing in it is special there, else shlex's quoting."""
    if not re.search(r'["$`\\!]', arg):
        return f'"{arg}"'
    return shlex.quote(arg)


def _quoted(arg: str) -> Optional[str]:
    """The override ``arg`` with its value quoted for Hydra, or None to pass it on as typed."""
    key, sep, value = arg.partition("=")
    if not sep or not value or not _KEY.match(key) or value[0] in "'\"" or _parses(arg):
        return None  # not an override, already quoted, or read by Hydra as it is (it reports its own mistakes)
    quoted = f"{key}={hydra_quote(value)}"
    if not _parses(quoted):
        return None
    if value.isascii():
        if "," in value or value[0] in "[{":  # a list, dict or sweep Hydra refused: its own message says why
            return None
        return quoted
    if "," in value or value[0] in "[{":
        raise UserError(f"{key}={value}: Hydra cannot read non-ASCII characters together with ',' or a leading "
                        f"'[' / '{{' unquoted (one string, a list or a sweep?); for one string type: {_shell(quoted)}")
    return quoted


def quote_values(argv: Sequence[str]) -> List[str]:
    """``argv`` with each override value Hydra's grammar refuses quoted for Hydra (the module docstring);
    flags and the values of Hydra's flags that take one are left alone. Raises :class:`UserError` for a
    value that cannot be quoted without guessing what it means."""
    out: List[str] = []
    flag_value = False
    for arg in argv:
        if flag_value:
            flag_value = False
            out.append(arg)
            continue
        if arg.startswith("-"):
            flag_value = arg in _FLAGS_WITH_VALUE  # "-cd folder" (not "--config-dir=folder")
            out.append(arg)
            continue
        out.append(_quoted(arg) or arg)
    return out
