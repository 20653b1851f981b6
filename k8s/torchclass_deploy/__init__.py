"""torchclass on Kubernetes, the top layer beside images/: the Helm values' layering and the
objects the wrapper chart adds to z2jh (k8s/README.md).

- layers: the values, layered as Helm layers them, with custom.torchclass checked against
  custom.schema.yaml;
- render: torchclass's own objects, rendered from those values
  (`python -m torchclass_deploy.render values|manifests|classroom`, run by make);
- grading_jobs: the grading Jobs (torchclass_grading.k8s_job) for the values' images, pools
  and limits (`python -m torchclass_deploy.grading_jobs COURSE_DIR AID`);
- chart_data: the pinned z2jh chart's schema and defaults kept in k8s/chart/upstream/
  (`python -m torchclass_deploy.chart_data verify|refresh`).

It drives the chart in the checkout it sits in (k8s/chart, k8s/values, k8s/files), so it runs
from a checkout with k8s/ on PYTHONPATH, as make sets it. It may import every layer below it
(the classroom file's loader); nothing below imports it (tests/test_layers.py).

Not named torchclass_k8s: that is the hub policy file (files/hub/torchclass_k8s.py), which z2jh
execs inside the hub pod under that name; one name for two different things would mislead.
"""
