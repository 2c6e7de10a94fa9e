"""Errors the user can fix, and how the command lines report them.

A ``JNDPlugError`` means the input, a file or the setup is wrong, not jndplug: its message names
the file and the fix, and the command lines print it as one line (``--debug`` adds the
traceback). So do an operating-system error on a path (a missing file, a denied folder) and a
missing optional dependency (the message names the extra to install). Any
other exception, a plain ``ValueError`` included, is a bug and keeps its traceback: a user error
is raised as :class:`JNDPlugValueError`, never as a bare ``ValueError``. The subclasses also
derive from the built-in exception a caller would expect, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import errno
import os
import re

class JNDPlugError(Exception):
    """Base class of the errors jndplug explains in one line."""


class JNDPlugValueError(JNDPlugError, ValueError):
    """A bad argument, config or file content."""


class JNDPlugTypeError(JNDPlugError, TypeError):
    """An argument of the wrong type (a numpy array where a tensor belongs, an integer image)."""


class CorruptFileError(JNDPlugValueError):
    """A file exists but cannot be read as what it should be (truncated, foreign, unsafe pickle)."""


# errno -> what to do, for errors raised by the operating system on a path the user gave
_OS_FIXES = {
    errno.EACCES: "permission denied; check the file's and its folder's permissions or choose another path",
    errno.EPERM: "operation not permitted; check the file's and its folder's permissions or choose another path",
    errno.ENOTDIR: "a part of this path is a file, not a folder; fix the path",
    errno.EEXIST: "a file of this name is in the way (a folder is needed here); fix the path or move the file",
    errno.EISDIR: "this is a folder; give a file name",
    errno.ENOSPC: "no space left on the device; free some space or choose another output folder",
    errno.EROFS: "the file system is read-only; choose another output folder",
    errno.ENAMETOOLONG: "the file name is too long; choose a shorter path",
}


# optional modules -> (distribution, the extra of pyproject.toml that installs it); the core install
# (what `import jndplug` and JNDTarget need) has none of them
OPTIONAL_MODULES = {
    "matplotlib": ("matplotlib", "viz"),
    "skimage": ("scikit-image", "viz"),
    "scipy": ("scipy", "study"),
    "flask": ("flask", "study"),
    "compressai": ("compressai", "compressai"),
    "basicsr": ("basicsr", "basicsr"),
}


def interrupted_message(rerun: str = "a rerun") -> str:
    """The one line a command prints when Ctrl-C stops it (exit status 130)."""
    return f"interrupted; finished work is kept and {rerun} resumes"


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message for an error the user can fix, or None (a bug: keep the traceback)."""
    if isinstance(exc, JNDPlugError):
        return str(exc)
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in OPTIONAL_MODULES:
        dist, extra = OPTIONAL_MODULES[exc.name.split(".")[0]]
        return f"this needs {dist}, which is not installed: pip install 'jndplug[{extra}]'"
    if isinstance(exc, OSError) and exc.filename is not None:
        fix = _OS_FIXES.get(exc.errno)
        if isinstance(exc, FileNotFoundError):
            fix = "no such file or folder; check the path"
        if fix is None:
            return None
        # a failed rename names its destination, a failed atomic write its temporary file: name the
        # file the user asked for in both cases
        name = os.fsdecode(exc.filename2 if exc.filename2 is not None else exc.filename)
        head, tail = os.path.split(name)
        temporary = re.fullmatch(r"\.(.+)\.[^.]{8}\.tmp", tail)
        if temporary:
            name = os.path.join(head, temporary.group(1))
        return f"{name}: {fix}"
    if isinstance(exc, FileNotFoundError):  # jndplug's own messages carry the path already
        return str(exc)
    return None


def load_torch_file(path: str | os.PathLike, what: str, fix: str):
    """``torch.load(path, weights_only=True)``, with a failure reported as a ``CorruptFileError``.

    ``what`` names what the file should be and ``fix`` what to do about it; torch's own messages
    (a truncated zip, a pickle that is not plain tensors) are kept only as the cause.
    """
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, AttributeError, ImportError) as exc:
        text = str(exc)
        if isinstance(exc, EOFError) or "central directory" in text:
            reason = "it is empty or truncated"
        elif "Unsupported global" in text:
            reason = "it holds objects other than tensors (refused, without running its code)"
        else:
            reason = "it is not a PyTorch checkpoint"
        raise CorruptFileError(f"{os.fspath(path)}: not a readable {what}: {reason}; {fix}") from exc
