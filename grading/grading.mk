# grading targets
