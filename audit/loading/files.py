"""Is this path a file we can read? One answer for every input (checkpoint, recipe, data, report)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Type


def file_problem(path: Path) -> str | None:
    """None for a regular file (or a link to one); otherwise what is wrong, in words. A pipe or device is
    never opened (reading a FIFO would block the run forever)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "not found"
    except NotADirectoryError:
        return "not found (a part of the path is a file, not a folder)"
    except PermissionError:
        return "cannot be read (permission denied)"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if stat.S_ISDIR(st.st_mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(st.st_mode):
        kind = ("a named pipe" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file")
        return f"is {kind}, not a regular file"
    if not os.access(path, os.R_OK):
        return "cannot be read (permission denied)"
    return None


def require_file(path: Path, what: str, error: Type[Exception]) -> None:
    """Raise ``error("<path>: <what> not found" | "<path>: <what> is a folder, not a file" | ...)``."""
    problem = file_problem(path)
    if problem is not None:
        raise error(f"{path}: {what} {problem}")
