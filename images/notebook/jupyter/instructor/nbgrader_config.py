"""nbgrader settings of an instructor's server in the notebook image (the Docker classroom's
instructor containers, the Kubernetes formgrader): read after /etc/jupyter/nbgrader_config.py,
because start-notebook puts this folder first on JUPYTER_CONFIG_PATH.

Autograde (the formgrader's button, `nbgrader autograde` in a terminal) would run students'
code here, beside the gradebook, the solutions and every submission: it is refused, naming
$TORCHCLASS_GRADE_COMMAND (set by the spawner or the chart), by the class in
torchclass_exchange (hub/torchclass_exchange.py, shipped into this image).

Students write every notebook the formgrader shows: their markdown and outputs are sanitized
before they reach the instructor's browser. Feedback never carries the hidden tests' code, nor
an error message that quotes it. The same settings as torchclass_exchange.config_text(
autograde_off=True, sanitize_html=True, hide_hidden_tests=True); tests/test_nbgrader_configs.py
checks.
"""

c = get_config()  # noqa: F821 (provided by nbgrader's config loader)
c.HTMLExporter.sanitize_html = True
c.HTMLExporter.preprocessors = ["nbconvert.preprocessors.sanitize.SanitizeHTML"]
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades", "torchclass_exchange.HideHiddenTestErrors",
    "nbgrader.preprocessors.ClearHiddenTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
c.Autograde.exporter_class = "torchclass_exchange.AutogradeSwitchedOff"
