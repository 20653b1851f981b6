# course targets
# The classroom's shared, read-only data folder; students' notebooks find it by this path.
# Defaults to the classroom's datasets folder, which the hub hands to every server as
# TORCHCLASS_DATA (hub/README.md, "Where data lives"). Not DATA_DIR: that one moves the hub's state.
DATASETS_DIR ?= $(shell PYTHONPATH=$(PYTHONPATH) $(HUB) datasets-dir)
DATA_ONLY ?= mnist,fashion_mnist,cifar10,imdb,resnet18,minilm

.PHONY: data data-verify lessons

data: install ## stage the real datasets and weights once for the classroom into DATASETS_DIR (needs internet)
	$(PY) -m torchclass_course.stage --root $(DATASETS_DIR) --only $(DATA_ONLY)

data-verify: install ## re-check the SHA-256 of every file staged in DATASETS_DIR
	$(PY) -m torchclass_course.stage --root $(DATASETS_DIR) --verify

lessons: install ## execute every lesson notebook on CPU within its time budget
	$(PY) -m pytest -n $(TEST_WORKERS) -m lessons tests/course/test_lessons.py
