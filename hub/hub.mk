# Classroom targets: start, stop and inspect the JupyterHub classroom on this machine.
# PORT=8001 / IP=0.0.0.0 / DATA_DIR=... override the classroom file for one run;
# CLASSROOM=<file> picks another classroom file (default hub/classroom.yaml).
HUB := $(PY) -m torchclass_hub.cli $(if $(CLASSROOM),--classroom $(CLASSROOM)) \
  $(if $(PORT),--port $(PORT)) $(if $(IP),--ip $(IP)) $(if $(DATA_DIR),--data-dir $(DATA_DIR))
.PHONY: up down status users validate reset-password hub-docs bench-load \
        up-docker grade-docker down-docker

up: install ## start the classroom (validates the classroom file first); data is kept across runs
	@$(HUB) validate
	@$(HUB) up

down: ## stop the classroom: the hub, every student server, the formgrader (data is kept)
	@$(HUB) down

status: ## is the classroom running, where, its data, and which servers failed to start (why)
	@$(HUB) status

users: ## list the roster and who has a password
	@$(HUB) users

validate: ## check the classroom file against its schema; starts nothing
	@$(HUB) validate

reset-password: ## give NAME=<user> a new password (printed once)
	@test -n "$(NAME)" || { echo "error: say whose: make reset-password NAME=<user>" >&2; exit 2; }
	@$(HUB) reset-password $(NAME)

# The same classroom file on one Docker host: the hub image in a container, a container per
# student (torchclass_hub/docker_classroom.py); the images come from images/images.mk.
DOCKER_CLASSROOM = HUB_IMAGE=$(HUB_IMAGE) NOTEBOOK_IMAGE=$(NOTEBOOK_IMAGE) \
  $(PY) -m torchclass_hub.docker_classroom
up-docker: install build ## the classroom in Docker: hub container + one container per student (root)
	$(DOCKER_CLASSROOM) up $(if $(PORT),--port $(PORT))

grade-docker: install ## grade ASSIGNMENT's collected submissions of the Docker classroom, kernels in sandboxed containers (root)
	@test -n "$(ASSIGNMENT)" || { echo "usage: make grade-docker ASSIGNMENT=<id>" >&2; exit 2; }
	$(DOCKER_CLASSROOM) grade $(ASSIGNMENT) $(if $(WORKERS),--workers $(WORKERS))

down-docker: install ## stop the Docker classroom's hub and student containers (data kept)
	$(DOCKER_CLASSROOM) down

hub-docs: ## print the classroom-file reference table (for hub/README.md)
	@$(HUB) schema-docs

# The load generator: STUDENTS=50,100,200 RATE=2 (arrivals per second, 0 = all at once),
# QUICK=1 (3 students), or another hub: URL=https://... ROSTER=<user password file> COURSE=<id>.
STUDENTS ?= 50,100,200
RATE ?= 2
LOAD_ARGS = $(if $(QUICK),--quick,--students $(STUDENTS) --rate $(RATE)) \
  $(if $(URL),--url $(URL) --roster $(ROSTER) --course-id $(COURSE) --allow-remote)
bench-load: install ## students arriving at a deadline: login, start, fetch, a cell, submit (root)
	@mkdir -p $(BENCH_DIR)
	$(PY) tests/bench/bench_load.py $(LOAD_ARGS) --out $(BENCH_DIR)
