"""torchclass grading: nbgrader course commands and the sandboxed grading engine."""
