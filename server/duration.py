"""Keep-alive durations as Ollama takes them: seconds, or a string like "5m" or "1h30m".

0 means "unload right after the request"; any negative value means "never
unload" (pinned), returned as ``None``.
"""

from __future__ import annotations

import math
import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_KEEP_ALIVE_S = 366 * 86_400.0


def parse_keep_alive(value: float | str, field: str = "keep_alive") -> float | None:
    """Seconds to stay loaded once idle, or None for "forever"; ValueError names ``field``."""
    seconds: float
    if isinstance(value, str):
        text = value.strip()
        negative = text.startswith("-")
        body = text[1:] if negative else text
        try:
            seconds = float(body)
        except ValueError:
            parts = _PART.findall(body)
            if not body or "".join(n + u for n, u in parts) != body:
                raise ValueError(
                    f'{field}: expected seconds or a duration such as "30s", "5m", '
                    f'"1h30m" (or -1 to keep the model loaded), got {value!r}'
                ) from None
            seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
        seconds = -seconds if negative else seconds
    else:
        seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError(f"{field}: must be a finite number of seconds, got {value!r}")
    if seconds < 0:
        return None
    if seconds > MAX_KEEP_ALIVE_S:
        limit = f"{MAX_KEEP_ALIVE_S:.0f}"
        raise ValueError(f"{field}: at most {limit} s (or -1 for ever), got {value!r}")
    return seconds
