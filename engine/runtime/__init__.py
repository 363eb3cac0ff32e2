"""The OCI runtime layer: the only code that runs conmon, runc and CRIU.

The package's names (``from engine.runtime import OCIRuntime``) are loaded when first
asked for (PEP 562), not whenever a module of the package is imported: the pure rules
(``engine.containers.decide``) use the runtime's value types (``engine.runtime.types``)
and must not load conmon's and runc's drivers with them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.runtime.config import RuntimeConfig as RuntimeConfig
    from engine.runtime.interface import Runtime as Runtime
    from engine.runtime.oci import OCIRuntime as OCIRuntime
    from engine.runtime.types import Created as Created
    from engine.runtime.types import ExecResult as ExecResult
    from engine.runtime.types import Status as Status
    from engine.runtime.types import StatusReport as StatusReport

_HOME = {"Created": "types", "ExecResult": "types", "OCIRuntime": "oci", "Runtime": "interface",
         "RuntimeConfig": "config", "Status": "types", "StatusReport": "types"}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)  # on first use: see above
