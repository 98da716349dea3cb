"""Loading research checkpoints (``.ckpt``/``.pt`` pickles) without ever running code from them.

``torch.load(weights_only=True)`` rebuilds tensors, dicts and lists only. Lightning checkpoints also pickle
small objects (callback states, hyper-parameter containers) whose classes are not on torch's allowlist, so a
plain weights-only load refuses the whole file. ``load_checkpoint`` then allowlists an *inert stand-in* for
each such class (it records the pickled state and never executes anything) and tries again. Names from
modules that can run code (``os``, ``subprocess``, ``builtins`` …) are never stood in for: such a file is
refused outright as a malicious pickle.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

from pipelines.core.errors import MethodUnavailableError

_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_BLOCKED_GLOBAL = re.compile(r"unsupported GLOBAL ([\w.]+) whose module \w+ is blocked")
_DANGEROUS_MODULES = {
    "os",
    "posix",
    "nt",
    "subprocess",
    "builtins",
    "__builtin__",
    "sys",
    "shutil",
    "socket",
    "importlib",
    "runpy",
    "pickle",
    "_pickle",
    "marshal",
    "types",
    "code",
    "codeop",
    "pty",
    "ctypes",
    "webbrowser",
    "functools",
    "operator",
    "io",
    "pathlib",
    "tempfile",
    "multiprocessing",
    "threading",
    "signal",
    "asyncio",
    "eval",
    "exec",
}
_MAX_STAND_INS = 64


class UnsafeCheckpointError(MethodUnavailableError):
    """The file asks to run code while loading; it was refused and nothing in it was executed."""


class InertObject:
    """Stands in for a pickled object of a class we do not load: keeps its arguments and state, runs nothing."""

    qualified_name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert stand-in for {self.qualified_name}>"


def _stand_in(qualified_name: str) -> type:
    return type("Inert", (InertObject,), {"qualified_name": qualified_name})


def load_checkpoint(
    path: str | os.PathLike[str], *, what: str = "checkpoint", stand_ins: Collection[str] | None = None
) -> dict[str, Any]:
    """Load a torch checkpoint with the weights-only unpickler (plus inert stand-ins, see the module doc).

    Raises ``MethodUnavailableError`` with a message naming the file for a missing, truncated or foreign
    file, and ``UnsafeCheckpointError`` for one that tries to call dangerous functions. ``stand_ins``, when
    given, is the complete list of class names that may be stood in for (a strict allowlist): any other
    unknown global is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise MethodUnavailableError(f"The {what} {path} does not exist.")
    allowed: list[tuple[type, str]] = []
    for _ in range(_MAX_STAND_INS):
        try:
            with torch.serialization.safe_globals(allowed):
                loaded = torch.load(path, map_location="cpu", weights_only=True)
            break
        except pickle.UnpicklingError as exc:
            blocked = _BLOCKED_GLOBAL.search(str(exc))  # torch itself refuses os, subprocess, … outright
            match = blocked or _UNSUPPORTED_GLOBAL.search(str(exc))
            if match is None:
                raise _unreadable(path, what, exc) from None
            name = match.group(1)
            if blocked or name.split(".")[0] in _DANGEROUS_MODULES:
                raise UnsafeCheckpointError(
                    f"The {what} {path.name} tries to call {name} while loading, which could run code on this "
                    "machine. It was refused and nothing in it was executed. "
                    "Only use checkpoints from a source you trust."
                ) from None
            if stand_ins is not None and name not in stand_ins:
                raise UnsafeCheckpointError(
                    f"The {what} {path.name} refers to {name}, which such a file never contains. It was refused "
                    "and nothing in it was executed."
                ) from None
            allowed.append((_stand_in(name), name))
        except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
            raise _unreadable(path, what, exc) from None
    else:
        raise MethodUnavailableError(f"The {what} {path.name} pickles too many unknown classes to be a checkpoint.")
    if not isinstance(loaded, dict):
        raise MethodUnavailableError(f"The {what} {path.name} holds a {type(loaded).__name__}, not a checkpoint dict.")
    return loaded


def _unreadable(path: Path, what: str, exc: BaseException) -> MethodUnavailableError:
    size = path.stat().st_size
    detail = (str(exc).splitlines() or [""])[0][:160]
    return MethodUnavailableError(
        f"The {what} {path} ({size / 1e6:.1f} MB) cannot be read: it is truncated or not a PyTorch checkpoint "
        f"({type(exc).__name__}{': ' + detail if detail else ''}). Download it again and check its size."
    )


def inert_module_state_dict(module: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """The parameters and persistent buffers of a pickled ``nn.Module`` tree that was loaded as inert stand-ins."""
    state = getattr(module, "state", None)
    if not isinstance(state, dict):
        raise MethodUnavailableError(f"Expected a pickled torch module at {prefix or 'the top'}; found {module!r}.")
    tensors = {}
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    for kind in ("_parameters", "_buffers"):
        for name, tensor in (state.get(kind) or {}).items():
            if tensor is not None and name not in non_persistent:
                tensors[prefix + name] = tensor.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            tensors.update(inert_module_state_dict(child, f"{prefix}{name}."))
    return tensors
