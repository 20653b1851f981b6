"""The grading engine: every submission of an assignment graded in parallel, each kernel
sandboxed, recorded in nbgrader's gradebook (grading/README.md).

Modules: core (Engine), prepare (nbgrader's sanitizing of a submission), run (the worker that
executes a notebook in a kernel), record (nbgrader's Autograde from a staging copy), state
(the per-submission .done records), backends (KernelBackend, the interface every place
kernels run implements), kernel_env (course settings, library copy, dataset cache).
`python -m torchclass_grading.engine COURSE_DIR ASSIGNMENT` runs it (__main__.py).
"""

from torchclass_grading.engine.backends import BACKENDS, KernelBackend, backend_class
from torchclass_grading.engine.common import (
    INTEGRITY,
    MAX_OUTPUT,
    TIMEOUT_ENAME,
    TIMEOUT_STRIKES,
    EngineError,
    Outcome,
)
from torchclass_grading.engine.core import Engine
from torchclass_grading.engine.kernel_env import course_config
from torchclass_grading.engine.run import (
    SENTINEL_PATH,
    Verdict,
    bound_names,
    execute,
    read_verdict,
)
from torchclass_grading.engine.state import (
    STATE,
    done_file,
    read_state,
    submission_stamp,
    submission_state,
    write_state,
)

__all__ = [
    "BACKENDS", "INTEGRITY", "MAX_OUTPUT", "SENTINEL_PATH", "STATE", "TIMEOUT_ENAME",
    "TIMEOUT_STRIKES", "Engine", "EngineError", "KernelBackend", "Outcome", "Verdict",
    "backend_class", "bound_names", "course_config", "done_file", "execute", "read_state",
    "read_verdict", "submission_stamp", "submission_state", "write_state",
]
