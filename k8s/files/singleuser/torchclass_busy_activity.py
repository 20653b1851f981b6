"""Jupyter server extension: a busy kernel counts as activity for JupyterHub's idle culler.

A training cell that prints nothing for hours leaves the server's last activity at the moment
the cell started, and the culler would stop the server (and free its GPU) mid-run. Every
TORCHCLASS_BUSY_CHECK_SECONDS (default 60) this extension looks at the kernels; while one is
executing it refreshes a `*_last_activity` setting, which jupyter_server counts in
last_activity() and jupyterhub-singleuser reports to the hub. An idle server (every kernel
idle, nobody at the keyboard) reports nothing new, so the culler still reclaims it.
"""

import os
from datetime import UTC, datetime

from tornado.ioloop import PeriodicCallback

SETTING = "torchclass_busy_last_activity"


def _jupyter_server_extension_points():
    return [{"module": "torchclass_busy_activity"}]


def busy_kernel_ids(kernel_manager):
    return [kid for kid in kernel_manager.list_kernel_ids()
            if getattr(kernel_manager.get_kernel(kid), "execution_state", None) == "busy"]


def _load_jupyter_server_extension(serverapp):
    seconds = float(os.environ.get("TORCHCLASS_BUSY_CHECK_SECONDS", "60"))
    settings = serverapp.web_app.settings

    def check():
        if busy_kernel_ids(serverapp.kernel_manager):
            settings[SETTING] = datetime.now(UTC)

    callback = PeriodicCallback(check, seconds * 1000)
    callback.start()
    serverapp.log.info("torchclass: busy kernels count as activity (checked every %ss)", seconds)
