"""Running CNI plugins as the CNI specification says, and nothing else.

A plugin is an executable found in ``CNI_PATH``; the runtime gives it the operation
and the container in environment variables (``CNI_COMMAND``, ``CNI_CONTAINERID``,
``CNI_NETNS``, ``CNI_IFNAME``, ``CNI_PATH``), one plugin configuration on stdin and
reads a JSON result (or a JSON error ``{code, msg, details}``) from stdout.

A network configuration list is run as libcni does: ADD runs the plugins in order,
each configuration carrying the list's ``name`` and ``cniVersion``, the previous
plugin's result as ``prevResult`` and, for a plugin that declares a capability, the
runtime's value of it in ``runtimeConfig``; the last result is the list's. DEL runs
them in reverse order with the ADD result as ``prevResult``, and tolerates what is
already gone (the spec asks plugins to). CHECK runs them in order with the ADD
result. Nothing here decides anything about networks (``engine.networks.rules`` does).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.errors import RuntimeFailure

DEFAULT_PATH = "/usr/lib/cni:/opt/cni/bin"
PATH_ENV = "BERTH_CNI_PATH"
PLUGIN_TIMEOUT = 60.0

ADD, DEL, CHECK = "ADD", "DEL", "CHECK"


class PluginError(RuntimeFailure):
    """A plugin answered with a CNI error (or no valid answer at all)."""


@dataclass(frozen=True)
class Invocation:
    """The container a CNI operation is about."""

    container_id: str
    netns: str
    ifname: str
    capabilities: Mapping[str, Any]
    """Runtime values by capability name (``portMappings``), given only to plugins
    that declare the capability."""


class CNI:
    """Runs the plugins of ``path`` (a colon-separated list of directories)."""

    def __init__(self, path: str | None = None, timeout: float = PLUGIN_TIMEOUT) -> None:
        self.path = path or os.environ.get(PATH_ENV) or DEFAULT_PATH
        self.timeout = timeout

    def find(self, plugin_type: str) -> str:
        if not plugin_type or "/" in plugin_type or plugin_type.startswith("."):
            raise PluginError(f"invalid CNI plugin type {plugin_type!r}")
        for directory in self.path.split(":"):
            candidate = os.path.join(directory, plugin_type)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
        raise PluginError(f"CNI plugin {plugin_type!r} not found in {self.path} "
                          "(install containernetworking-plugins)")

    # -- one plugin ---------------------------------------------------------------

    def exec_plugin(self, command: str, conf: Mapping[str, Any],
                    call: Invocation) -> dict[str, Any]:
        """Run one plugin; its parsed result (empty for DEL and CHECK)."""
        plugin = self.find(str(conf.get("type", "")))
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": call.container_id,
               "CNI_NETNS": call.netns, "CNI_IFNAME": call.ifname, "CNI_PATH": self.path,
               "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
        try:
            done = subprocess.run([plugin], input=json.dumps(conf).encode(), env=env,
                                  capture_output=True, timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise PluginError(f"CNI plugin {conf.get('type')} {command} did not answer "
                              f"within {self.timeout:g} s") from None
        except OSError as exc:
            raise PluginError(f"cannot run CNI plugin {plugin}: {exc}") from None
        if done.returncode != 0:
            raise PluginError(_error_text(conf, command, done.stdout, done.stderr))
        if command != ADD:
            return {}
        try:
            result = json.loads(done.stdout or b"{}")
        except ValueError:
            raise PluginError(f"CNI plugin {conf.get('type')} ADD printed no JSON "
                              "result") from None
        if not isinstance(result, dict):
            raise PluginError(f"CNI plugin {conf.get('type')} ADD printed a non-object")
        return result

    # -- a configuration list -------------------------------------------------------------

    @staticmethod
    def plugin_conf(conflist: Mapping[str, Any], plugin: Mapping[str, Any],
                    prev: Mapping[str, Any] | None, call: Invocation) -> dict[str, Any]:
        """One plugin's stdin: its config with the list's name and version, the
        previous result and the runtime values of the capabilities it declares."""
        conf = dict(plugin)
        conf["name"] = conflist["name"]
        conf["cniVersion"] = conflist["cniVersion"]
        if prev is not None:
            conf["prevResult"] = dict(prev)
        wanted = plugin.get("capabilities") or {}
        runtime = {k: v for k, v in call.capabilities.items() if wanted.get(k)}
        if runtime:
            conf["runtimeConfig"] = runtime
        return conf

    def add(self, conflist: Mapping[str, Any], call: Invocation) -> dict[str, Any]:
        """ADD the list; its result. A plugin that fails leaves the ones before it
        added: the caller runs DEL (which tolerates the half) to undo."""
        result: dict[str, Any] | None = None
        for plugin in conflist["plugins"]:
            result = self.exec_plugin(ADD, self.plugin_conf(conflist, plugin, result, call),
                                      call)
        return result or {}

    def delete(self, conflist: Mapping[str, Any], call: Invocation,
               cached: Mapping[str, Any] | None) -> list[str]:
        """DEL the list in reverse order; every plugin is tried, the errors returned."""
        errors = []
        for plugin in reversed(conflist["plugins"]):
            try:
                self.exec_plugin(DEL, self.plugin_conf(conflist, plugin, cached, call), call)
            except PluginError as exc:
                errors.append(exc.message)
        return errors

    def check(self, conflist: Mapping[str, Any], call: Invocation,
              cached: Mapping[str, Any]) -> None:
        """CHECK the list in order against the ADD result; PluginError if one fails."""
        for plugin in conflist["plugins"]:
            self.exec_plugin(CHECK, self.plugin_conf(conflist, plugin, cached, call), call)

    def add_one(self, conf: Mapping[str, Any], call: Invocation) -> dict[str, Any]:
        """ADD a single plugin configuration (not a list): ``lo`` for --network none."""
        return self.exec_plugin(ADD, conf, call)


def _error_text(conf: Mapping[str, Any], command: str, stdout: bytes, stderr: bytes) -> str:
    """The plugin's CNI error (``msg`` and ``details``), else whatever it printed."""
    what = f"CNI plugin {conf.get('type')} {command} failed"
    try:
        err = json.loads(stdout)
        if isinstance(err, dict) and err.get("msg"):
            detail = f": {err['details']}" if err.get("details") else ""
            return f"{what} (code {err.get('code')}): {err['msg']}{detail}"
    except ValueError:
        pass
    text = (stderr or stdout).decode(errors="replace").strip()
    return f"{what}: {text[-500:] or 'no output'}"
