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
         option: str | None = None, omitted=dataclasses.MISSING, command_line: bool = True, **argparse_keywords):
    """A ``Settings`` field that is also its command's flag: its default (a list is copied for each
    instance; ``factory`` computes one when the parser is built), the flag's help and any other
    argparse keywords (``choices``, ``metavar``, a fixed ``nargs``, ``action="append"``). ``choices``
    may be a function, called when the parser is built (a registry that grows after import). Fields
    that name the same ``exclusive`` group are alternatives: the command line takes exactly one.

    ``option``: the name on the command line when it is not ``--field-name`` (another flag, or a
    name without dashes for a positional argument). ``omitted``: what the parsed flag holds when it
    is not given, where that is not the field's default (None lets a command tell a given flag from
    an absent one, to refuse a flag the run would ignore); :func:`settings_from_args` then leaves
    the field its default. ``command_line=False``: no flag; the command computes the value from
    flags of its own and hands it to :func:`settings_from_args`."""
    meta = {"help": help, **argparse_keywords}
    if exclusive is not None:
        meta["exclusive"] = exclusive
    if factory is not None:
        # computed when the Settings are made, not when the parser is built: a factory may import
        # torch (is CUDA there?) or a registry, and --help must not wait for either
        meta["deferred"] = True
    if option is not None:
        meta["option"] = option
    if omitted is not dataclasses.MISSING:
        meta["omitted"] = omitted
    if not command_line:
        meta = {"command_line": False}
    if isinstance(default, list):
        factory = (lambda values: lambda: list(values))(default)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


_OWN_KEYS = ("exclusive", "option", "omitted", "command_line", "deferred")  # read here, not argparse keywords


def _option(f: dataclasses.Field) -> str:
    return f.metadata.get("option", "--" + f.name.replace("_", "-"))


def _dest(f: dataclasses.Field) -> str:
    return _option(f).lstrip("-").replace("-", "_")  # argparse's own rule


def add_settings_arguments(p: argparse.ArgumentParser, settings_class, names: list[str] | None = None) -> None:
    """A flag for each field of the dataclass ``settings_class``, ``--field-name``: typed from the
    annotation (a list takes one or more values, ``X | None`` is an optional X, a bool is a
    switch), required where the field has no default, with the keywords given to :func:`flag`.

    ``names``: only these fields, in this order; without it, every field whose flag ``p`` does not
    have yet, in declaration order. A command places flags of its own between the fields' by
    adding the first fields by name, then its own, then the rest."""
    hints = typing.get_type_hints(settings_class)
    fields = {f.name: f for f in dataclasses.fields(settings_class)}
    if names is None:
        present = {a.dest for a in p._actions}
        names = [n for n, f in fields.items() if f.metadata.get("command_line", True) and _dest(f) not in present]
    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for name in names:
        f = fields[name]
        kw = {k: v for k, v in f.metadata.items() if k not in _OWN_KEYS}
        if callable(kw.get("choices")):
            kw["choices"] = kw["choices"]()
        where = p
        if "exclusive" in f.metadata:
            group = f.metadata["exclusive"]
            if group not in groups:
                groups[group] = p.add_mutually_exclusive_group(required=True)
            where = groups[group]
        option = _option(f)
        if f.metadata.get("deferred"):
            kw["default"] = argparse.SUPPRESS  # absent from the namespace: the dataclass computes it
        elif "omitted" in f.metadata:
            kw["default"] = f.metadata["omitted"]
        elif f.default is not dataclasses.MISSING:
            kw["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            kw["default"] = f.default_factory()
        elif option.startswith("-"):  # a positional argument is required by being positional
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
        where.add_argument(option, **kw)


def settings_from_args(settings_class, args: argparse.Namespace, **computed):
    """The ``settings_class`` instance of the parsed flags (other attributes of ``args`` are ignored);
    ``computed``: the values of fields the command makes itself (``flag(command_line=False)``). A
    flag with a computed default that was not given is absent, and the dataclass computes it."""
    values = dict(computed)
    for f in dataclasses.fields(settings_class):
        if f.name in values or not f.metadata.get("command_line", True) or not hasattr(args, _dest(f)):
            continue
        value = getattr(args, _dest(f))
        if "omitted" not in f.metadata or value != f.metadata["omitted"]:
            values[f.name] = value
    return settings_class(**values)
