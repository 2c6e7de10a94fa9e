"""``KIND:PATH``: how the command lines name a dataset, parsed in one place.

A kind has one name everywhere: ``generated`` is a ``jndplug datagen`` dataset labelled by
``jndplug study aggregate``, for training (``jndplug train --data``) and for patch pairs
(``jndplug patches build``) alike.
"""

from __future__ import annotations

from jndplug.errors import JNDPlugValueError


def parse_spec(spec: str, kinds: tuple[str, ...], flag: str = "") -> tuple[str, str]:
    """``(kind, path)`` of ``spec``; ``kinds`` are the ones the caller reads, ``flag`` names the option."""
    where = f"{flag} {spec!r}" if flag else repr(spec)
    kind, sep, path = spec.partition(":")
    if not sep or not path:
        raise JNDPlugValueError(f"{where}: expected KIND:PATH with KIND one of {', '.join(kinds)}")
    if kind not in kinds:
        raise JNDPlugValueError(f"{where}: unknown kind {kind!r}; use one of {', '.join(kinds)}")
    return kind, path
