"""The OCI runtime layer: the only code that runs conmon, runc and CRIU."""

from engine.runtime.config import RuntimeConfig
from engine.runtime.interface import Runtime
from engine.runtime.oci import OCIRuntime
from engine.runtime.types import Created, ExecResult, Status, StatusReport

__all__ = ["Created", "ExecResult", "OCIRuntime", "Runtime", "RuntimeConfig", "Status",
           "StatusReport"]
