"""labkit's checkpoint format, and loading checkpoints safely.

A checkpoint is written atomically (`labkit.core.files.atomic_write`): a process killed at any moment leaves
either the old or the new checkpoint, never half of one. Loading uses
`torch.load(weights_only=True)`: tensors and plain data only, so a file carrying pickled code is refused and
nothing in it runs. A SHA-256 digest of the contents, stored inside, catches bytes damaged after the write (the zip
container torch writes does not check its own CRCs on load).
"""

from __future__ import annotations

import hashlib
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..core.errors import LabkitError
from ..core.files import atomic_write

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "load_tensors", "digest"]

FORMAT = "labkit-checkpoint/1"
_REQUIRED = ("format", "config", "model", "N", "M", "digest")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically save a checkpoint dict (tensors and plain data only), with a digest of its contents."""
    state = {"format": FORMAT, **state}
    atomic_write(path, lambda f: torch.save({**state, "digest": digest(state)}, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a labkit checkpoint without executing anything in it; every failure is one clear `LabkitError`."""
    path = Path(path)
    state = load_tensors(path, map_location)
    missing = [k for k in _REQUIRED if not isinstance(state, dict) or k not in state]
    if missing or state.get("format") != FORMAT:
        raise LabkitError(f"{path} is not a labkit checkpoint (format {FORMAT}); missing: {', '.join(missing) or '-'}")
    if digest({k: v for k, v in state.items() if k != "digest"}) != state["digest"]:
        raise LabkitError(f"checkpoint {path} is corrupted (its contents do not match the digest saved with them); "
                          f"use an intact checkpoint or retrain")
    return state


def load_tensors(path: str | Path, map_location: str | torch.device = "cpu", allow: Sequence[type] = ()) -> Any:
    """`torch.load(weights_only=True)`: tensors and plain data, plus the classes in `allow` (e.g. the
    `argparse.Namespace` another code base saved its arguments in); nothing in the file runs. Every failure
    (missing, truncated, corrupted, or a file that would import anything else) is one clear `LabkitError`."""
    path = Path(path)
    if not path.is_file():
        raise LabkitError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(list(allow)):
            warnings.simplefilter("ignore")  # torch warns about pickle protocols of foreign files; the error says it
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        code = re.search(r"GLOBAL (\S+?)(?: whose|\s|$)", str(e))
        code = code.group(1) if code else _pickled_calls(path)
        if code:
            raise LabkitError(f"refused to load {path}: it would import {code}, so it may carry code; labkit "
                              f"loads only tensors and plain data and ran nothing from it") from None
        raise LabkitError(f"checkpoint {path} is truncated or corrupted ({_reason(e)}); nothing in it was run; "
                          f"use an intact checkpoint or retrain") from None
    except Exception as e:  # torch raises RuntimeError, EOFError, KeyError, ... for damaged files
        raise LabkitError(f"checkpoint {path} is truncated or corrupted ({type(e).__name__}); "
                          f"use an intact checkpoint or retrain") from None


def _reason(e: pickle.UnpicklingError) -> str:
    """The part of torch's long weights-only message that says what it could not read."""
    found = re.search(r"Unsupported operand \d+", str(e))
    return found.group(0) if found else " ".join(str(e).split())[:80]


def _pickled_calls(path: Path) -> str | None:
    """For a bare pickle (not torch's zip) that torch gave up on early: does it import anything? Read, not run."""
    if zipfile.is_zipfile(path):
        return None
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(path.read_bytes()):
            if op.name in ("GLOBAL", "INST"):
                return str(arg).replace(" ", ".")
            if op.name == "STACK_GLOBAL":  # module and name are the last two strings pushed
                return ".".join(strings[-2:])
            if isinstance(arg, str):
                strings.append(arg)
    except Exception:  # garbage after the opcodes that could be read
        pass
    return None


def digest(obj: Any) -> str:
    """SHA-256 over the nested dicts, lists, tensors and scalars of a checkpoint, in a fixed order."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    else:
        h.update(f"S{obj!r}".encode())
