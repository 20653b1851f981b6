"""Grading Jobs for this cluster: torchclass_grading.k8s_job's objects (grading/README.md,
"Backends"), given the images, node pools, kernel limits and datasets volume that the chart's
values and the classroom file say.

    python -m torchclass_deploy.grading_jobs COURSE_DIR AID [--image IMG] [--classroom FILE]
        [--site FILE] [--namespace NS] > jobs.yaml            # then kubectl apply -f jobs.yaml

Recording the results needs no values: python -m torchclass_grading.k8s_job record ...
"""

import argparse
import sys

import yaml
from torchclass_grading import k8s_job

from torchclass_deploy.layers import ValuesError, load_values, torchclass_settings
from torchclass_deploy.render import image_ref


def cluster(site=None, classroom=None) -> k8s_job.Cluster:
    """The Cluster of the layered values (no GPU layer needed: the images and pools are in the
    base). The kernel's limits are the classroom file's spawner limits where it sets them, else
    the chart's singleuser limits."""
    values = load_values(site=site)
    tc = torchclass_settings(values)
    su = values["jupyterhub"]["singleuser"]
    cpu, memory = su["cpu"]["limit"], su["memory"]["limit"]
    if classroom:
        from torchclass_classroom import ConfigError, load

        try:
            spawner = load(classroom, env={})["spawner"]
        except ConfigError as err:
            raise ValuesError(str(err)) from err
        cpu, memory = spawner.get("cpu_limit", cpu), spawner.get("mem_limit", memory)
    return k8s_job.Cluster(
        cpu_image=image_ref(tc["images"]["cpu"]), cuda_image=image_ref(tc["images"]["cuda"]),
        cpu_pool=tc["cpuPool"], gpu_pool=tc["gpuPool"],
        limits={"cpu": str(cpu), "memory": str(memory)}, datasets=tc["datasets"])


def build(course_dir, aid, image=None, classroom=None, site=None, namespace=None,
          problems=None) -> list[dict]:
    return k8s_job.build(course_dir, aid, cluster(site, classroom), image=image,
                         namespace=namespace, problems=problems)


def dump(docs: list[dict]) -> str:
    class Plain(yaml.SafeDumper):
        def ignore_aliases(self, data):  # shared dicts written out in full, as kubectl shows them
            return True

    return yaml.dump_all(docs, Dumper=Plain, sort_keys=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m torchclass_deploy.grading_jobs",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("course_dir")
    ap.add_argument("assignment")
    ap.add_argument("--image", help="image of both containers (default: the chart values' CPU "
                    "image, or the CUDA image for an assignment that needs a GPU)")
    ap.add_argument("--classroom", help="classroom file whose spawner limits the kernels get")
    ap.add_argument("--site", help="the site's values file (k8s/values/site.yaml)")
    ap.add_argument("--namespace")
    args = ap.parse_args(argv)
    from torchclass_grading.engine import EngineError

    problems: list[str] = []
    try:
        docs = build(args.course_dir, args.assignment, image=args.image,
                     classroom=args.classroom, site=args.site, namespace=args.namespace,
                     problems=problems)
    except (ValuesError, k8s_job.JobError, EngineError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for p in problems:
        print(f"note: {p}", file=sys.stderr)
    sys.stdout.write(dump(docs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
