"""What a client sent, made safe to write into a log line.

A request path arrives percent-decoded (``%0D%0A`` is a real line break), and a user
name or a rejected value may be any length: written as they are, one request could forge
log lines or fill the log. :func:`printable` escapes every control and non-printing
character (``\\r`` becomes the two characters ``\\r``) and cuts the text to a bounded
length, saying how much was left out.
"""

from __future__ import annotations

from typing import Any

DEFAULT_LIMIT = 200


def printable(value: Any, limit: int = DEFAULT_LIMIT) -> str:
    """``value``'s text with control characters escaped, at most ``limit`` characters of it.

    Args:
        value: what the client sent (a path, a user name, a value).
        limit: the most characters kept from the text (before escaping).
    """
    text = value if isinstance(value, str) else str(value)
    kept, cut = text[:limit], len(text) - limit
    escaped = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in kept)
    return f"{escaped}…(+{cut} chars)" if cut > 0 else escaped
