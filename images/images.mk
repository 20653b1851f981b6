# Image targets: building, testing and benchmarking the container images, the Docker classroom.
.PHONY: docker-engine images-base build build-cpu build-hub build-cuda lock bench-images \
        data-volume

IMAGE_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_PREFIX ?= torchclass
NOTEBOOK_IMAGE ?= $(IMAGE_PREFIX)/notebook:$(IMAGE_VERSION)
NOTEBOOK_CUDA_IMAGE ?= $(IMAGE_PREFIX)/notebook:$(IMAGE_VERSION)-cuda
HUB_IMAGE ?= $(IMAGE_PREFIX)/hub:$(IMAGE_VERSION)
BASE_IMAGE := $(shell sed -n 's/^ARG BASE_IMAGE=//p' images/notebook/Dockerfile)
# Extra build args, e.g. BUILD_ARGS="--build-arg TORCHAUDIO_VERSION=" to leave torchaudio out.
BUILD_ARGS ?=
# Debian's docker client has BuildKit built in; a newer client needs its buildx plugin.
DOCKER ?= $(shell docker buildx version >/dev/null 2>&1 && echo docker || (test -x /usr/bin/docker && echo /usr/bin/docker || echo docker))
export DOCKER
DOCKER_BUILD_FLAGS ?=
export DOCKER_BUILD_FLAGS

docker-engine: ## start a local Docker engine if none is running (root)
	bash images/start-docker-engine

images-base: ## make the pinned base image locally when no registry can be reached (debootstrap)
	bash images/build-base-standin $(BASE_IMAGE)

build: build-cpu build-hub ## build the CPU notebook image and the hub image

build-cpu: ## build the CPU notebook image ($(NOTEBOOK_IMAGE))
	bash images/build-image images/notebook/Dockerfile $(NOTEBOOK_IMAGE) $(BUILD_ARGS)

build-hub: ## build the hub image ($(HUB_IMAGE))
	bash images/build-image images/hub/Dockerfile $(HUB_IMAGE) $(BUILD_ARGS)

build-cuda: ## build the CUDA notebook image ($(NOTEBOOK_CUDA_IMAGE)); ~6 GB of wheels
	bash images/build-image images/notebook/Dockerfile $(NOTEBOOK_CUDA_IMAGE) \
	  --args-file images/notebook/cuda/build-args $(BUILD_ARGS)

lock: install ## recompile every requirements.in into its pinned requirements.txt (pip-compile)
	PY=$(PY) bash images/lock

bench-images: install ## image sizes, build times, start-to-ready time -> bench-results/
	@mkdir -p $(BENCH_DIR)
	$(PY) tests/bench/bench_images.py --out $(BENCH_DIR)

DATA_VOLUME ?= torchclass-data

data-volume: ## stage the real datasets once into the $(DATA_VOLUME) volume (classrooms mount it read-only)
	$(DOCKER) volume create $(DATA_VOLUME) >/dev/null
	$(DOCKER) run --rm --network host -v $(DATA_VOLUME):/srv/torchclass/data \
	  $(NOTEBOOK_IMAGE) python -m torchclass_course.stage --root /srv/torchclass/data
