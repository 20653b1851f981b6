"""torchclass policy for the JupyterHub chart's hub (z2jh 4.4.0).

`make deploy` mounts this file into the hub at
/usr/local/etc/jupyterhub/jupyterhub_config.d/, which the chart's jupyterhub_config.py executes
after it has turned the values into KubeSpawner configuration. The chart's exec gives this file
its config object `c`; its settings come from the values' `custom.torchclass` block through the
chart's `z2jh.get_config`, the same block torchclass_deploy.render renders the other objects
from.

What it adds to what the values already say:
- GPU profiles (those asking for an nvidia.com/* resource) get the GPU pool's node selector and
  tolerations and the CUDA image; the time-sliced profile gets a CUDA memory cap of 1/replicas.
- Each student pod mounts only its own part of the nbgrader exchange; the hub creates that
  part before the pod starts, owned by the hub's uid (1000, the uid every pod runs as).
- The nbgrader course groups and the instructors' access to their course's formgrader.
"""

import os
import re

from z2jh import get_config

c = globals()["c"]  # the chart's config object: its jupyterhub_config.py execs this file

TORCHCLASS = get_config("custom.torchclass", {})
# Usernames become path components (exchange subPaths): only plain names are accepted, the
# same pattern the classroom file uses for its roster.
SAFE_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")
GPU_RESOURCE_PREFIX = "nvidia.com/"
SHARED_GPU_RESOURCE = "nvidia.com/gpu.shared"


def shared_gpu_memory_fraction(replicas):
    """The share of the card's memory each of `replicas` time-sliced students may allocate."""
    if not isinstance(replicas, int) or replicas < 1:
        raise ValueError(
            f"custom.torchclass.gpuSharing.replicas must be a positive integer, got {replicas!r}"
        )
    return 1.0 / replicas


def gpu_profile_overrides(profile, torchclass, base_tolerations=()):
    """Complete a profile's kubespawner_override from its node pool's settings (in place).
    A profile's tolerations replace the spawner's, so the chart's own come along."""
    override = profile.setdefault("kubespawner_override", {})
    resources = override.get("extra_resource_limits", {})
    if not any(name.startswith(GPU_RESOURCE_PREFIX) for name in resources):
        pool = torchclass.get("cpuPool", {})
    else:
        pool = torchclass.get("gpuPool", {})
        cuda = torchclass["images"]["cuda"]
        override.setdefault("image", f"{cuda['name']}:{cuda['tag']}")
        if SHARED_GPU_RESOURCE in resources:
            fraction = shared_gpu_memory_fraction(torchclass["gpuSharing"]["replicas"])
            env = override.setdefault("environment", {})
            # torch's CUDA caching allocator reads this at CUDA initialisation and applies
            # set_per_process_memory_fraction: every process, with no change to the image.
            env.setdefault("PYTORCH_CUDA_ALLOC_CONF", f"per_process_memory_fraction:{fraction:.4f}")
    if pool.get("nodeSelector"):
        override["node_selector"] = {**override.get("node_selector", {}), **pool["nodeSelector"]}
    if pool.get("tolerations"):
        override["tolerations"] = (list(base_tolerations) + list(override.get("tolerations", []))
                                   + pool["tolerations"])
    return profile


def exchange_mounts(username, torchclass):
    """The student's view of each course's exchange: releases read-only, own inbound writable,
    own feedback read-only. Nothing of another student is mounted, so nothing can be read."""
    if not SAFE_NAME.match(username):
        raise ValueError(
            f"username {username!r} cannot name an exchange folder: "
            f"it must match {SAFE_NAME.pattern}"
        )
    root = torchclass["exchange"]["mountPath"]
    mounts = []
    for course in torchclass.get("courses", []):
        cid = course["id"]
        own = f"{cid}/students/{username}"
        mounts += [
            {"name": "exchange", "mountPath": f"{root}/{cid}/outbound",
             "subPath": f"{cid}/outbound", "readOnly": True},
            {"name": "exchange", "mountPath": f"{root}/{cid}/inbound",
             "subPath": f"{own}/inbound"},
            {"name": "exchange", "mountPath": f"{root}/{cid}/feedback",
             "subPath": f"{own}/feedback", "readOnly": True},
        ]
    return mounts


def prepare_exchange(username, torchclass, hub_root=None):
    """Create the student's exchange folders (as the hub's uid) so the kubelet finds them
    instead of creating root-owned ones the student could not write to."""
    hub_root = hub_root or torchclass["exchange"]["hubMountPath"]
    if not os.path.isdir(hub_root):
        # Folders made in the hub container's own filesystem would vanish with it.
        raise RuntimeError(f"the exchange volume is not mounted in the hub at {hub_root} "
                           "(values: hub.extraVolumes/extraVolumeMounts, k8s/chart/values.yaml)")
    for mount in exchange_mounts(username, torchclass):
        path = os.path.join(hub_root, mount["subPath"])
        os.makedirs(path, mode=0o755, exist_ok=True)


def pre_spawn_hook(spawner):
    username = spawner.user.name
    prepare_exchange(username, TORCHCLASS)
    mounts = exchange_mounts(username, TORCHCLASS)
    if isinstance(spawner.volume_mounts, dict):
        # The chart keys its mounts by name, KubeSpawner mounts the values (in key order).
        spawner.volume_mounts = {**spawner.volume_mounts,
                                 **{f"torchclass-exchange-{i}": m for i, m in enumerate(mounts)}}
    else:
        spawner.volume_mounts = list(spawner.volume_mounts) + mounts
    # Read by the students' nbgrader config (values: singleuser.extraFiles.nbgrader-config).
    spawner.environment = {
        **spawner.environment,
        "NBGRADER_EXCHANGE": TORCHCLASS["exchange"]["mountPath"],
        "TORCHCLASS_COURSES": ",".join(c["id"] for c in TORCHCLASS.get("courses", [])),
    }


def course_groups_and_roles(torchclass):
    """nbgrader's JupyterHub plugin finds a student's courses from groups nbgrader-<course>;
    instructors (group formgrade-<course>) may open that course's formgrader service."""
    groups, roles = {}, []
    for course in torchclass.get("courses", []):
        cid = course["id"]
        groups[f"nbgrader-{cid}"] = {"users": list(course.get("students", []))}
        groups[f"formgrade-{cid}"] = {"users": list(course.get("instructors", []))}
        roles.append({
            "name": f"formgrader-{cid}-users",
            "scopes": [f"access:services!service=formgrader-{cid}",
                       f"list:services!service=formgrader-{cid}"],
            "groups": [f"formgrade-{cid}"],
        })
    return groups, roles


def apply(config, torchclass):
    spawner = config.KubeSpawner
    # Without the GPU layer there is no profile list: students get the CPU image directly.
    profiles = spawner.get("profile_list") or []
    if profiles:
        base = spawner.get("tolerations") or []
        spawner.profile_list = [gpu_profile_overrides(dict(p), torchclass, base)
                                for p in profiles]
    spawner.pre_spawn_hook = pre_spawn_hook
    # Beyond the chart's uid 1000 and no privilege escalation: refuse to start as root, no
    # Linux capabilities, the runtime's default seccomp filter. Student code is untrusted.
    spawner.container_security_context = {
        "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # Students' servers ask the hub for their own groups (the courses they are in).
    spawner.server_token_scopes = [
        "access:servers!server", "users:activity!user",
        "read:users:name!user", "read:users:groups!user",
    ]
    groups, roles = course_groups_and_roles(torchclass)
    # An authenticator that manages groups (OAuth/LTI claims) owns them: the identity provider
    # then supplies nbgrader-<course> and formgrade-<course>, and JupyterHub forbids load_groups.
    if not any(section.get("manage_groups") for section in config.values()
               if hasattr(section, "get")):
        config.JupyterHub.load_groups = {**groups, **dict(config.JupyterHub.get("load_groups", {}))}
    config.JupyterHub.load_roles = list(config.JupyterHub.get("load_roles", [])) + roles


apply(c, TORCHCLASS)
