"""nbgrader settings of an instructor's server in the notebook image (the Docker classroom's
instructor containers, the Kubernetes formgrader): read after /etc/jupyter/nbgrader_config.py,
because start-notebook puts this folder first on JUPYTER_CONFIG_PATH."""

import os

from nbconvert.exporters import NotebookExporter

c = get_config()  # noqa: F821 (provided by nbgrader's config loader)

# Where the sandboxed grader runs depends on the deployment; the spawner (or the chart) says.
GRADE_COMMAND = os.environ.get(
    "TORCHCLASS_GRADE_COMMAND", "torchclass-grade grade {aid}, on the classroom's machine")


class AutogradeSwitchedOff(NotebookExporter):
    """nbgrader's Autograde (the formgrader's button, `nbgrader autograde` in a terminal) would
    run students' code here, as this server's account, beside the gradebook, the solutions and
    every submission. Refused before anything changes: nbgrader makes the exporter before it
    touches the autograded folder."""

    def __init__(self, *args, **kwargs):
        parent = kwargs.get("parent")
        aid = getattr(getattr(parent, "coursedir", None), "assignment_id", "") or "ASSIGNMENT"
        raise RuntimeError(
            "Autograding here is switched off: it would run students' code unsandboxed next to "
            "the gradebook and the solutions. Grade in the sandbox instead: "
            + GRADE_COMMAND.format(aid=aid) + "; the grades then show in the formgrader.")


c.Autograde.exporter_class = AutogradeSwitchedOff
