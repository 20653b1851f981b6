"""nbgrader settings of the notebook image: where the exchange is and which course this is.
The Docker classroom mounts only the parts of the exchange a user may see (see
hub/torchclass_hub/spawners/docker.py)."""

import os

c = get_config()  # noqa: F821 (provided by nbgrader's config loader)
c.Exchange.root = os.environ.get("NBGRADER_EXCHANGE", "/srv/nbgrader/exchange")
if os.environ.get("TORCHCLASS_COURSE_ID"):
    c.CourseDirectory.course_id = os.environ["TORCHCLASS_COURSE_ID"]
# The instructor's course folder (the Docker classroom mounts it at its host path).
if os.environ.get("NBGRADER_COURSE_ROOT"):
    c.CourseDirectory.root = os.environ["NBGRADER_COURSE_ROOT"]
