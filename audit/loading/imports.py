"""Import a ``module:callable`` or ``path/to/file.py:callable`` named in a recipe."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable

from audit.errors import RecipeError


def import_callable(spec: str, base_dir: Path, where: str) -> Callable[..., Any]:
    """Resolve ``spec``; ``where`` names the recipe key for messages (e.g. "recipe.toml: [model] factory").

    Module paths are imported with the working directory and the recipe's folder on sys.path (so a
    recipe next to its code works from anywhere); file paths are relative to the recipe's folder.
    """
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_absolute():
            path = base_dir / path
        from audit.loading.files import file_problem

        problem = file_problem(path)
        if problem is not None:
            raise RecipeError(f"{where} = {spec!r}: file {path} {problem}")
        mod_name = "_audit_user_" + "_".join(path.resolve().with_suffix("").parts[-3:]).replace("-", "_").replace(".", "_")
        module = sys.modules.get(mod_name)
        if module is None:
            file_spec = importlib.util.spec_from_file_location(mod_name, path)
            assert file_spec is not None and file_spec.loader is not None
            module = importlib.util.module_from_spec(file_spec)
            sys.modules[mod_name] = module
            try:
                # The file's own folder first, so it can import its siblings.
                sys.path.insert(0, str(path.parent.resolve()))
                file_spec.loader.exec_module(module)
            except Exception as e:
                del sys.modules[mod_name]
                raise RecipeError(f"{where} = {spec!r}: importing {path} failed: {type(e).__name__}: {e}") from e
            finally:
                sys.path.remove(str(path.parent.resolve()))
    else:
        extra = [str(Path.cwd()), str(base_dir.resolve())]
        added = [p for p in extra if p not in sys.path]
        sys.path[:0] = added
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise RecipeError(f"{where} = {spec!r}: cannot import module {target!r}: {e}") from e
        except Exception as e:
            raise RecipeError(f"{where} = {spec!r}: importing {target!r} failed: {type(e).__name__}: {e}") from e
        finally:
            for p in added:
                sys.path.remove(p)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(module) if not n.startswith("_")]
            raise RecipeError(f"{where} = {spec!r}: {target} has no attribute {attr!r} "
                              f"(it defines: {', '.join(names[:12])})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise RecipeError(f"{where} = {spec!r}: {attr!r} is not callable")
    return obj
