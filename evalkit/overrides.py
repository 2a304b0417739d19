"""Command-line overrides written from Python values, quoted as Hydra's override grammar requires, and the fix for an
override Hydra cannot parse.

Hydra reads an unquoted value with a small grammar: a comma, ``=``, brackets, parentheses, quotes, ``#``, spaces
between words or a non-ASCII letter end or break it, so ``model.dir=gen, seed=1 (v2)`` or ``model.dir=refs ü`` is a
parse error. A quoted value (``'...'`` or ``"..."``) holds any character; inside it the quote character is escaped
with a backslash, and backslashes are escaped only where they precede a quote or end the value (Hydra 1.3, "Quoted
values"). OmegaConf still resolves ``${...}`` inside a quoted value, so a literal ``${`` in a path is written
``\\${`` (and backslashes before it doubled).
"""
from __future__ import annotations

import re
from typing import Any

#: What a valid override key looks like (``+``/``++``/``~`` prefixes, dotted keys, ``group/option`` and ``@pkg``).
_KEY = re.compile(r"^[~+]{0,2}[A-Za-z_][\w./@-]*$")


def quote(value: Any, q: str = "'", interpolations: bool = False) -> str:
    """``value`` as one quoted Hydra value that reads back as exactly ``str(value)``: ``quote("gen, seed=1 (v2)")``
    -> ``'gen, seed=1 (v2)'``, ``quote("it's")`` -> ``'it\\'s'``. ``q``: the quote character (``'`` or ``"``).
    ``interpolations``: keep ``${...}`` as an interpolation (the user's own override) instead of escaping it (a path
    that happens to contain ``${``)."""
    if q not in ("'", '"'):
        raise ValueError(f"quote(q={q!r}): Hydra quotes with ' or \"")
    text = str(value)
    if not interpolations:  # OmegaConf: \${ is a literal ${, and \\ before it a literal backslash
        text = re.sub(r"(\\*)\$\{", lambda m: "\\" * (2 * len(m[1]) + 1) + "${", text)
    # Hydra: a backslash run before the quote character or the end is escaped, then the quote itself
    text = re.sub(r"(\\*)(" + re.escape(q) + "|$)", lambda m: m[1] * 2 + ("\\" + q if m[2] else ""), text)
    return q + text + q


def _parsed(text: str):
    """The value Hydra reads from ``key=<text>``; raises ``OverrideParseException`` when it cannot read it, and
    ValueError when it reads a sweep (``a,b``: several runs, not one value)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    override = OverridesParser.create().parse_override(f"key={text}")
    if override.is_sweep_override():
        raise ValueError(f"{text!r} reads as a sweep")
    return override.value()


def value(v: Any) -> str:
    """A Python value as an override's value, read back by Hydra as that value: ``None`` -> ``null``, booleans,
    numbers, lists (each item likewise), and strings as written when Hydra reads them back unchanged (a word such as
    ``random``, or a number or ``true`` typed as on the command line), else quoted (:func:`quote`; ``${`` is then
    literal: a Python string is not an interpolation)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(value(x) for x in v) + "]"
    text = str(v)
    if not text or text.strip() != text or "${" in text or not _reads(text):
        return quote(text)
    back = _parsed(text)
    plain = back == text if isinstance(back, str) else isinstance(back, (int, float, bool)) or back is None
    return text if plain else quote(text)


def path_override(key: str, path: Any) -> str:
    """``key='<path>'``: a path is always quoted, so that a folder named ``7``, ``true`` or ``null`` stays a path."""
    return f"{key}={quote(path)}"


def quoting_message(exc: Exception) -> str | None:
    """For Hydra's error about an override it cannot read as written, one line naming the setting and the quoting to
    use (:func:`parse_error_message`); None for any other error. Two kinds: its parser's (``OverrideParseException``:
    ``mismatched input '=' expecting <EOF>``, a character its lexer does not allow) and a value with a comma that it
    reads as several (``Ambiguous value for argument 'model.dir=a,b'``)."""
    if isinstance(getattr(exc, "override", None), str):
        return parse_error_message(exc.override, str(exc))
    m = re.match(r"Ambiguous value for argument '(.*)'\n", str(exc))
    if m:
        return parse_error_message(m[1], "a comma makes it several values, a list or a sweep")
    return None


def parse_error_message(override: str, reason: str) -> str:
    """One line for an override Hydra cannot read as written: the setting, why (Hydra's words), and the quoting to
    use, as a Python string and on a shell command line (``'model.dir="gen, seed=1 (v2)"'``); just the override and
    the grammar's page when quoting its value would not help (the key itself is malformed)."""
    reason = reason.strip().splitlines()[0] if reason.strip() else "a parse error"
    if reason.startswith("LexerNoViableAltException"):
        reason = "a character it does not allow in an unquoted value"
    key, sep, val = override.partition("=")
    fixed = f"{key}={quote(val, interpolations=True)}"
    if sep and _KEY.match(key) and _reads(quote(val, interpolations=True)):
        double = f"{key}={quote(val, q=chr(34), interpolations=True)}"
        shell = f"'{double}'" if "'" not in double else '"' + re.sub(r'([\\"$`])', r"\\\1", double) + '"'
        return (f"{key}: Hydra cannot read the value {val!r} unquoted ({reason}); quote it: {fixed} (on a shell "
                f"command line: {shell})")
    return (f"{override}: not an override Hydra can parse ({reason}); see "
            f"https://hydra.cc/docs/advanced/override_grammar/basic/")


def _reads(text: str) -> bool:
    """True when Hydra reads ``key=<text>`` as one value."""
    try:
        _parsed(text)
    except Exception:  # OverrideParseException, or a sweep
        return False
    return True
