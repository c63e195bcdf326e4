"""The default models: MTT_musicnn, imported from the musicnn package on first use, and the models of the
three default stream scales (used once they are all available, bundled with mde or stored by the user).

The import needs torch (to convert and export), which the runtime never imports: it runs as a separate
``mde import musicnn`` process, so ``mde embed`` / ``mde tag`` stay torch-free. A bundled or user-stored
MTT_musicnn is used as it is, with no import.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from mde.errors import MdeError, ModelNotFound

# mde.runtime.store (numpy, through the metadata module) is imported where it is used: the command line reads
# the names below for its help texts at startup, before any command runs.

DEFAULT_MODEL = "MTT_musicnn"
"""Used when a command or ``load_model`` is given no model."""
DEFAULT_SCALE_MODELS: Mapping[float, str] = MappingProxyType({0.5: "MTT_fcn05", 3.7: "MTT_fcn037", 29.0: "MTT_fcn29"})
"""Window length (s) -> the model serving that scale when ``mde stream`` is given no model for it, each at its
own native window. Used only when all three resolve (bundled with mde or stored); otherwise DEFAULT_MODEL
serves every scale at the scale's length."""
MUSICNN_INSTALL = "pip install --no-deps musicnn==0.1.0"
TORCH_INSTALL = "pip install 'mde[export]'"


def default_model_path(announce: Callable[[str], object] = print) -> Path:
    """The default model (the user's stored one, else a bundled one), importing it from the installed musicnn
    package into the user's store if neither exists.

    ``announce`` receives a one-line note before a first-use import starts.
    """
    from mde.runtime import store

    found = store.find(DEFAULT_MODEL)
    if found is not None:
        return found
    path = store.model_path(DEFAULT_MODEL)
    missing = [hint for module, hint in (("musicnn", MUSICNN_INSTALL), ("torch", TORCH_INSTALL))
               if importlib.util.find_spec(module) is None]
    if missing:
        raise ModelNotFound(
            f"the default model {DEFAULT_MODEL} is imported from the musicnn package on first use; "
            f"install what it needs ({' && '.join(missing)}) or pass --model"
        )
    _check_writable(path.parent)
    announce(f"first use: importing the default model {DEFAULT_MODEL} from the musicnn package into {path.parent}")
    # Run from the store folder: `python -m` puts the working directory first on sys.path, and a
    # source checkout there (without its compiled kernel) would shadow the installed package.
    proc = subprocess.run(
        [sys.executable, "-m", "mde", "import", "musicnn", DEFAULT_MODEL],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=path.parent,
    )
    if proc.returncode != 0 or not path.is_file():
        reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelNotFound(f"importing the default model {DEFAULT_MODEL} failed: {reason}")
    return path


def _check_writable(folder: Path) -> None:
    """Create the store folder and prove it writable (a real write: root ignores permission bits), or
    raise MdeError with one line that says how to point MDE_HOME elsewhere."""
    from mde.runtime import store

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise MdeError(
            f"MDE_HOME ({store.mde_home()}) is not writable ({exc.strerror or exc}), so the default model "
            f"{DEFAULT_MODEL} cannot be imported there: set MDE_HOME to a writable folder "
            f"(export MDE_HOME=/path/to/folder) or pass --model"
        ) from None
