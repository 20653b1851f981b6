# k8s targets: deploy the classroom with Helm on an existing cluster (k8s/README.md).
# Values layers, in this order (later wins): k8s/chart/values.yaml (implicit), k8s/values/gpu.yaml
# (GPU_VALUES= to leave out), the layer made from $(CLASSROOM) if set (course, roster, limits from
# hub/classroom.yaml), $(SITE_VALUES); then the policy files passed with --set-file.
.PHONY: deploy k8s-secret k8s-values k8s-template k8s-lint k8s-test bench-gpu

RELEASE ?= torchclass
NAMESPACE ?= torchclass
SITE_VALUES ?= k8s/values/site.yaml
GPU_VALUES ?= k8s/values/gpu.yaml
CLASSROOM ?=
CLASSROOM_LAYER := build/k8s-classroom-values.yaml
K8S_RENDER_ARGS = $(if $(wildcard $(SITE_VALUES)),--site $(SITE_VALUES)) $(if $(GPU_VALUES),,--no-gpu) \
  $(if $(CLASSROOM),--classroom $(CLASSROOM))
K8S_GENERATED := k8s/chart/templates/torchclass.generated.yaml
HELM_SET_FILES := \
  --set-file jupyterhub.hub.extraFiles.torchclass-k8s.stringData=k8s/files/hub/torchclass_k8s.py \
  --set-file jupyterhub.singleuser.extraFiles.busy-activity.stringData=k8s/files/singleuser/torchclass_busy_activity.py
HELM_LAYERS = $(if $(GPU_VALUES),-f $(GPU_VALUES)) $(if $(CLASSROOM),-f $(CLASSROOM_LAYER)) \
  -f $(SITE_VALUES) $(HELM_SET_FILES)
# The classroom file's layer, written where helm can read it (only when CLASSROOM is set).
define classroom_layer
	$(if $(CLASSROOM),@mkdir -p build && $(PY) -m torchclass_deploy.render classroom --classroom $(CLASSROOM) \
	  $(if $(GPU_VALUES),,--no-gpu) --out $(CLASSROOM_LAYER))
endef

define need
	@command -v $(1) >/dev/null || { echo "error: $(1) is not installed; $(2)" >&2; exit 1; }
endef

k8s-values: ## print the layered Helm values (SITE_VALUES=..., GPU_VALUES= for CPU-only)
	@$(PY) -m torchclass_deploy.render values $(K8S_RENDER_ARGS)

k8s-template: ## render torchclass's own objects into the chart (and everything, if helm is here)
	$(call classroom_layer)
	$(PY) -m torchclass_deploy.render manifests $(K8S_RENDER_ARGS) --out $(K8S_GENERATED)
	@if command -v helm >/dev/null && test -f $(SITE_VALUES); then \
	  mkdir -p build && helm dependency build k8s/chart >/dev/null \
	  && helm template $(RELEASE) k8s/chart -n $(NAMESPACE) $(HELM_LAYERS) > build/k8s-rendered.yaml \
	  && echo "Full render (z2jh included): build/k8s-rendered.yaml"; \
	else echo "note: helm or $(SITE_VALUES) missing; rendered torchclass's objects only: $(K8S_GENERATED)"; fi

k8s-lint: ## validate values and every object offline; `helm lint` too where helm is installed
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m k8s tests/k8s
	$(call classroom_layer)
	@if command -v helm >/dev/null && test -f $(SITE_VALUES); then \
	  helm dependency build k8s/chart >/dev/null && helm lint k8s/chart $(HELM_LAYERS); fi

k8s-test: k8s-lint ## alias of k8s-lint

k8s-secret: ## create the hub's Secret with random tokens once (never overwrites); needs kubectl
	$(call need,kubectl,see https://kubernetes.io/docs/tasks/tools/)
	@if kubectl -n $(NAMESPACE) get secret torchclass-hub-secrets >/dev/null 2>&1; then \
	  echo "Secret $(NAMESPACE)/torchclass-hub-secrets exists; left as is."; else \
	  kubectl create namespace $(NAMESPACE) --dry-run=client -o yaml | kubectl apply -f - >/dev/null; \
	  kubectl -n $(NAMESPACE) create secret generic torchclass-hub-secrets \
	    --from-literal=hub.config.JupyterHub.cookie_secret=$$(openssl rand -hex 32) \
	    --from-literal=hub.config.CryptKeeper.keys=$$(openssl rand -hex 32) \
	    --from-literal=oauth-client-secret="$${OAUTH_CLIENT_SECRET:-unset}" \
	  && echo "Created $(NAMESPACE)/torchclass-hub-secrets (set OAUTH_CLIENT_SECRET=... to include your login's secret)."; fi

deploy: ## helm upgrade --install the classroom (SITE_VALUES, RELEASE, NAMESPACE); see k8s/README.md
	$(call need,helm,see https://helm.sh/docs/intro/install/)
	$(call need,kubectl,see https://kubernetes.io/docs/tasks/tools/)
	@test -f $(SITE_VALUES) || { echo "error: $(SITE_VALUES) not found: copy k8s/values/site.example.yaml there and edit it (or pass SITE_VALUES=path)" >&2; exit 1; }
	@kubectl -n $(NAMESPACE) get secret torchclass-hub-secrets >/dev/null 2>&1 \
	  || { echo "error: Secret $(NAMESPACE)/torchclass-hub-secrets is missing: run 'make k8s-secret' first" >&2; exit 1; }
	$(call classroom_layer)
	$(PY) -m torchclass_deploy.render manifests $(K8S_RENDER_ARGS) --out $(K8S_GENERATED)
	helm dependency build k8s/chart
	helm upgrade --install $(RELEASE) k8s/chart --namespace $(NAMESPACE) --create-namespace \
	  $(HELM_LAYERS) --wait --timeout 15m
	@kubectl -n $(NAMESPACE) get service proxy-public

bench-gpu: install ## students per GPU: 1/2/4/8 concurrent ResNet-18 trainers (skips without a GPU)
	@mkdir -p $(BENCH_DIR)
	$(PY) tests/bench/bench_gpu.py --out $(BENCH_DIR) $(BENCH_GPU_ARGS)
