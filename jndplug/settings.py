"""Settings dataclasses that are also command lines: each field is the flag of its name.

A command declares what it takes once, as a dataclass whose fields carry their flag's help and
argparse keywords (:func:`flag`); :func:`add_settings_arguments` adds the flags and
:func:`settings_from_args` builds the dataclass back from the parsed namespace, so the Python
call and the command line cannot drift apart. Standard library only: commands of every layer (the
benchmarks, the estimator trainer, the training adapters) use it.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing


def flag(default=dataclasses.MISSING, help: str | None = None, *, factory=None, exclusive: str | None = None,
         **argparse_keywords):
    """A ``Settings`` field that is also its command's flag: its default (a list is copied for each
    instance; ``factory`` computes one when the parser is built), the flag's help and any other
    argparse keywords (``choices``, ``metavar``, a fixed ``nargs``, ``action="append"``). ``choices``
    may be a function, called when the parser is built (a registry that grows after import). Fields
    that name the same ``exclusive`` group are alternatives: the command line takes exactly one."""
    meta = {"help": help, **argparse_keywords}
    if exclusive is not None:
        meta["exclusive"] = exclusive
    if factory is not None:
        # computed when the Settings are made, not when the parser is built: a factory may import
        # torch (is CUDA there?) or a registry, and --help must not wait for either
        meta["deferred"] = True
    if isinstance(default, list):
        factory = (lambda values: lambda: list(values))(default)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def add_settings_arguments(p: argparse.ArgumentParser, settings_class) -> None:
    """A flag for each field of the dataclass ``settings_class``, ``--field-name``: typed from the
    annotation (a list takes one or more values, ``X | None`` is an optional X, a bool is a
    switch), required where the field has no default, with the keywords given to :func:`flag`."""
    hints = typing.get_type_hints(settings_class)
    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for f in dataclasses.fields(settings_class):
        kw = dict(f.metadata)
        if callable(kw.get("choices")):
            kw["choices"] = kw["choices"]()
        where = p
        if "exclusive" in kw:
            name = kw.pop("exclusive")
            if name not in groups:
                groups[name] = p.add_mutually_exclusive_group(required=True)
            where = groups[name]
        if kw.pop("deferred", False):
            kw["default"] = argparse.SUPPRESS  # absent from the namespace: the dataclass computes it
        elif f.default is not dataclasses.MISSING:
            kw["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            kw["default"] = f.default_factory()
        else:
            kw["required"] = True
        kind = hints[f.name]
        if kind is bool:
            kw["action"] = "store_true"
        else:
            if typing.get_origin(kind) is list and "action" not in kw:  # "append" collects one value per use
                kw.setdefault("nargs", "+")
            kind = next(a for a in (*typing.get_args(kind), kind) if a is not type(None))
            if kind is not str:
                kw["type"] = kind
        where.add_argument("--" + f.name.replace("_", "-"), **kw)


def settings_from_args(settings_class, args: argparse.Namespace):
    """The ``settings_class`` instance of the parsed flags (other attributes of ``args`` are ignored;
    a flag with a computed default that was not given is absent, and the dataclass computes it)."""
    return settings_class(**{f.name: getattr(args, f.name) for f in dataclasses.fields(settings_class)
                             if hasattr(args, f.name)})
