"""System-wide Jupyter server settings of the notebook image (read from /etc/jupyter)."""

import os

c = get_config()  # noqa: F821 (provided by Jupyter's config loader)

# Students get the assignment list and validation; the formgrader and course list are the
# instructor's, switched on by TORCHCLASS_ROLE=instructor (start-notebook adds the instructor
# config folder, which also turns the matching JupyterLab extensions back on).
instructor = os.environ.get("TORCHCLASS_ROLE") == "instructor"
c.ServerApp.jpserver_extensions = {
    "nbgrader.server_extensions.assignment_list": True,
    "nbgrader.server_extensions.validate_assignment": True,
    "nbgrader.server_extensions.formgrader": instructor,
    "nbgrader.server_extensions.course_list": instructor,
}

# nbgrader's formgrader works only on a course inside the server's root dir. The Docker
# classroom mounts the instructor's course at its host path (NBGRADER_COURSE_ROOT, named by the
# course's nbgrader_config.py), outside the home: only then does the server root at / (opening
# at home). Elsewhere (the Kubernetes formgrader: course under the home) the root stays the home,
# so a script that slipped into a student's notebook cannot browse the rest of the filesystem.
home = os.path.expanduser("~")
course_root = os.environ.get("NBGRADER_COURSE_ROOT", "")
if instructor and course_root and os.path.commonpath([home, os.path.abspath(course_root)]) != home:
    c.ServerApp.root_dir = "/"
    c.FileContentsManager.preferred_dir = home.lstrip("/")

# Kernels on TCP ports would be reachable by anyone on the network namespace (the Docker
# classroom uses the host's): code, outputs, and a way to run code in the server. ipc sockets sit
# in the runtime dir in the home (0700), which only this container mounts.
c.KernelManager.transport = "ipc"

# TensorBoard opens from the launcher, proxied under <server>/tensorboard/ so it works behind
# JupyterHub. It reads every run under the home folder (SummaryWriter writes ./runs by default).
c.ServerProxy.servers = {
    "tensorboard": {
        "command": [
            "tensorboard",
            "--logdir", os.path.expanduser("~"),
            "--host", "127.0.0.1",
            "--port", "{port}",
            "--path_prefix", "{base_url}tensorboard",
            "--reload_interval", "15",
        ],
        "absolute_url": True,
        "timeout": 60,
        "launcher_entry": {"title": "TensorBoard", "category": "Other"},
    }
}
