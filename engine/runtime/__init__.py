"""The OCI runtime layer: the only code that runs conmon, runc and CRIU."""

from engine.runtime.config import RuntimeConfig
from engine.runtime.oci import Created, ExecResult, OCIRuntime, Status, StatusReport

__all__ = ["Created", "ExecResult", "OCIRuntime", "RuntimeConfig", "Status", "StatusReport"]
