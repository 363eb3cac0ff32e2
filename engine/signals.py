"""Signal names and numbers, validated before they reach runc."""

from __future__ import annotations

import signal as _signal

from engine.errors import InvalidArgument

SIGRTMAX = int(_signal.SIGRTMAX)

_BY_NAME: dict[str, int] = {
    s.name: int(s.value)
    for s in _signal.Signals
    if s.name.startswith("SIG") and not s.name.startswith("SIG_")
}


def parse_signal(value: object) -> int:
    """Turn ``TERM``, ``SIGTERM``, ``sigterm``, ``15`` or ``RTMIN+3`` into a number.

    Signal 0 is refused: it is a liveness probe, not something to deliver.
    """
    if isinstance(value, bool):
        raise InvalidArgument(f"invalid signal {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip().upper()
        if not text.isascii() or not text.isprintable() or len(text) > 32:
            raise InvalidArgument(f"invalid signal {value!r}: use a name (TERM) or a number")
        if text.isdigit():
            number = int(text)
        else:
            if not text.startswith("SIG"):
                text = "SIG" + text
            if text.startswith("SIGRTMIN+") and text[9:].isdigit():
                number = int(_signal.SIGRTMIN) + int(text[9:])
            elif text.startswith("SIGRTMAX-") and text[9:].isdigit():
                number = SIGRTMAX - int(text[9:])
            elif text in _BY_NAME:
                number = _BY_NAME[text]
            else:
                raise InvalidArgument(f"invalid signal {value!r}: unknown signal name")
    else:
        raise InvalidArgument(f"invalid signal {value!r}")
    if not 1 <= number <= SIGRTMAX:
        raise InvalidArgument(f"invalid signal {value!r}: must be between 1 and {SIGRTMAX}")
    return number


def signal_name(number: int) -> str:
    try:
        return _signal.Signals(number).name
    except ValueError:
        return str(number)
