"""torchclass grading: nbgrader course commands and the assignments' submission families."""
