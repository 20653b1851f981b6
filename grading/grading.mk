# Grading targets: nbgrader commands for the classroom's course, run as its grader account.
# ASSIGNMENT=<id> picks the assignment; CLASSROOM=<file> another classroom file.
GRADE := $(PY) -m torchclass_grading.cli $(if $(CLASSROOM),--classroom $(CLASSROOM))
GRADES_CSV ?= grades.csv
.PHONY: release collect autograde grade feedback grades bench-grade

define need_assignment
	@test -n "$(ASSIGNMENT)" || { echo "error: say which assignment: make $@ ASSIGNMENT=s1-linear-regression" >&2; exit 2; }
endef

release: install ## release an assignment to students (ASSIGNMENT=id)
	$(need_assignment)
	$(GRADE) release $(ASSIGNMENT)

collect: install ## collect students' submissions (ASSIGNMENT=id)
	$(need_assignment)
	$(GRADE) collect $(ASSIGNMENT)

autograde: install ## switched off (ran student code unsandboxed): says to use make grade
	$(need_assignment)
	$(GRADE) autograde $(ASSIGNMENT)

grade: install ## grade in parallel, sandboxed, and write the report (ASSIGNMENT=id [WORKERS=n] [FORCE=1] [BACKEND=docker])
	$(need_assignment)
	$(GRADE) grade $(ASSIGNMENT) $(if $(WORKERS),--workers $(WORKERS)) $(if $(FORCE),--force) $(if $(BACKEND),--backend $(BACKEND))

feedback: install ## generate feedback and return it to students (ASSIGNMENT=id)
	$(need_assignment)
	$(GRADE) feedback $(ASSIGNMENT)

grades: install ## export the gradebook as CSV, one row per student (GRADES_CSV=grades.csv)
	$(GRADE) export --out $(GRADES_CSV)

# `make bench` runs this benchmark too (it runs every tests/bench/bench_*.py); this target runs
# it alone. BENCH_GRADE_ARGS passes options, e.g. --workers 2 --submissions 20.
bench-grade: install ## 40 submissions: stock nbgrader autograde vs the engine at 1/2/4 workers (bench-results/)
	@mkdir -p $(BENCH_DIR)
	OMP_NUM_THREADS=1 $(PY) tests/bench/bench_grade.py --out $(BENCH_DIR) $(BENCH_GRADE_ARGS)
