# Image targets: building, testing and benchmarking the container images.
.PHONY: docker-engine

docker-engine: ## start a local Docker engine if none is running (root)
	bash images/start-docker-engine
