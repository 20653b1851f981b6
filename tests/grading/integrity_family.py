"""An assignment and its attack family for the grader's integrity checks (test_integrity.py).

Every attack member answers wrongly (`half` returns 0) and then tries one way of changing, from
its own cell, what a later cell runs or what the kernel reports. Any point it gets is a point
stolen; each must score 0 and be flagged. The honest members use what honest notebooks use
(inline plots, a thread pool, warnings filters, their own helpers) and must be neither.
"""

from pathlib import Path

import nbformat
from toy_assignment import SOLUTION_META, TEST_META

WRONG = "def half(x):\n    return 0\n"
LOCKED = {"grade": False, "locked": True, "schema_version": 3, "solution": False, "task": False}

# member -> code put in the `half` cell
ATTACKS = {
    # IPython's input pipeline: every locked cell the grader sends is rewritten or dropped.
    "input-transformer-cleanup": WRONG + (
        "def drop(lines):\n    return ['pass\\n'] if any('sentinel' in l for l in lines) else lines\n"
        "get_ipython().input_transformers_cleanup.append(drop)"),
    "input-transformer-post": WRONG + (
        "def fake(lines):\n    if any('sentinel' in l for l in lines):\n"
        "        return ['print(\"all tests passed\")\\n']\n    return lines\n"
        "get_ipython().input_transformers_post.append(fake)"),
    "token-transformer": WRONG + (
        "mgr = get_ipython().input_transformer_manager\n"
        "mgr.line_transforms.append(lambda lines: [l.replace('assert', 'assert True or') for l in lines])"),
    "ast-transformer": WRONG + (
        "import ast\nclass NoAsserts(ast.NodeTransformer):\n"
        "    def visit_Assert(self, node):\n        return ast.Pass()\n"
        "get_ipython().ast_transformers.append(NoAsserts())"),
    # The shell's and the kernel's own methods, changed on the class.
    "class-showtraceback": WRONG + (
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "InteractiveShell.showtraceback = lambda *a, **k: None\n"
        "InteractiveShell._showtraceback = lambda *a, **k: None"),
    "class-run-cell": WRONG + (
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "real = InteractiveShell.run_cell\n"
        "def run_cell(self, raw_cell, *a, **k):\n"
        "    return real(self, 'pass' if 'sentinel' in raw_cell else raw_cell, *a, **k)\n"
        "InteractiveShell.run_cell = run_cell"),
    "class-do-execute-via-mock": WRONG + (
        "from unittest import mock\nfrom ipykernel.ipkernel import IPythonKernel\n"
        "real = IPythonKernel.do_execute\n"
        "async def do_execute(self, code, *a, **k):\n"
        "    return await real(self, 'pass' if 'sentinel' in code else code, *a, **k)\n"
        "mock.patch.object(IPythonKernel, 'do_execute', do_execute).start()"),
    "session-send": WRONG + (
        "session = get_ipython().kernel.session\nreal_send = session.send\n"
        "def send(stream, msg_or_type, content=None, *a, **k):\n"
        "    if isinstance(content, dict) and content.get('status') == 'error':\n"
        "        content = {'status': 'ok', 'execution_count': content.get('execution_count'),\n"
        "                   'user_expressions': {}, 'payload': []}\n"
        "    if msg_or_type == 'error':\n        return None\n"
        "    return real_send(stream, msg_or_type, content, *a, **k)\n"
        "session.send = send"),
    "event-edits-result": WRONG + (
        "def clear(result):\n    result.error_in_exec = None\n"
        "get_ipython().events.register('post_run_cell', clear)"),
    "custom-exc": WRONG + "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)",
    # A test cell's own import gets a fake.
    "sys-modules-fake": WRONG + (
        "import sys, types\nfake = types.ModuleType('numpy.testing')\n"
        "fake.assert_allclose = lambda *a, **k: None\nsys.modules['numpy.testing'] = fake"),
    # Helpers changed under the test: by assignment, by code swap, on the builtins.
    "code-swap": WRONG + "unittest.TestCase.assertEqual.__code__ = (lambda *a, **k: None).__code__",
    "builtins-patch": WRONG + "import builtins\nbuiltins.abs = lambda x: 0",
    # A thread that puts its patches back after anything undoes them.
    "background-thread": WRONG + (
        "import threading, time, math\ndef again():\n    while True:\n"
        "        math.isclose = lambda *a, **k: True\n        time.sleep(0.001)\n"
        "threading.Thread(target=again, daemon=True).start()"),
    "signal-timer": WRONG + (
        "import signal, math\n"
        "signal.signal(signal.SIGALRM, lambda *a: setattr(math, 'isclose', lambda *a, **k: True))\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)"),
    # Trace functions: no points, and no test cell slowed to its timeout either.
    "settrace": WRONG + (
        "import sys, time\ndef slow(frame, event, arg):\n    time.sleep(0.05)\n    return slow\n"
        "sys.settrace(slow)"),
    # Reaching for the grader's own machinery.
    "fake-sentinel": WRONG + (
        "import sys, types, os\nsys.modules['_torchclass_sentinel'] = types.SimpleNamespace(\n"
        "    run=lambda nonce, source, names=(): open(os.path.join('.seal', nonce), 'w').write(\n"
        "        '0' * 64 + '\\n' + nonce + '\\x1f\\x1fok\\x1f\\x1f\\x1f0\\x1e\\x1e'))"),
    "gc-walk": WRONG + (
        "import gc\nfor o in gc.get_objects():\n    if getattr(o, '__name__', '') == 'run':\n"
        "        print(o.__closure__)"),
    "ctypes-memory": WRONG + (
        "import ctypes\nprint(ctypes.string_at(id(abs), 64))\n"
        "api = ctypes.pythonapi.PyFrame_LocalsToFast"),
    "traceback-frames": WRONG + (
        "import sys, traceback\ntry:\n    sys.setprofile(None)\nexcept Exception as e:\n"
        "    for frame, _ in traceback.walk_tb(e.__traceback__):\n"
        "        print(sorted(frame.f_locals))"),
    # A library the hidden tests use without any locked cell binding it: a data loader or a
    # metric (numpy.linalg was loaded before any student code ran; statistics was not).
    "library-replaced": WRONG + "import numpy.linalg\nnumpy.linalg.norm = lambda *a, **k: 5.0",
    "library-imported-and-replaced": WRONG + "import statistics\nstatistics.median = lambda data: 2",
    "library-swapped-for-library": WRONG + (
        "import functools\nimport numpy.linalg\n"
        "numpy.linalg.norm = functools.partial(getattr, 5, 'real')  # norm(v) == 5"),
    "library-patched-during-a-test": (
        "import numpy.linalg\nimport statistics\n\n"
        "def half(x):\n    numpy.linalg.norm = lambda *a, **k: 5.0\n"
        "    statistics.median = lambda data: 2\n    return 0\n"),
    "library-given-a-builtin": (
        "import statistics\n\n"
        "def half(x):\n    statistics.sorted = lambda data: [2, 2, 2]\n    return 0\n"),
    # torch's own overrides: a mode left entered answers every torch call after it.
    "torch-function-mode": (
        "import torch\nfrom torch.overrides import TorchFunctionMode\n\n"
        "def half(x):\n    return torch.zeros(2) if torch.is_tensor(x) else 0\n\n"
        "class Agree(TorchFunctionMode):\n"
        "    def __torch_function__(self, func, types, args=(), kwargs=None):\n"
        "        return True if func is torch.equal else func(*args, **(kwargs or {}))\n\n"
        "Agree().__enter__()\n"),
    "torch-dispatch-mode": (
        "import torch\nfrom torch.utils._python_dispatch import TorchDispatchMode\n\n"
        "def half(x):\n    return torch.zeros(2) if torch.is_tensor(x) else 0\n\n"
        "class Agree(TorchDispatchMode):\n"
        "    def __torch_dispatch__(self, func, types, args=(), kwargs=None):\n"
        "        return True if func is torch.ops.aten.equal.default else func(*args, **(kwargs or {}))\n\n"
        "Agree().__enter__()\n"),
    # torch's dispatcher given a kernel of the student's for aten::equal on the CPU.
    "aten-kernel-override": (
        "import torch\n\n_lib = torch.library.Library('aten', 'IMPL')\n"
        "_lib.impl('equal', lambda a, b: True, 'CPU')\n\n"
        "def half(x):\n    return torch.zeros(2) if torch.is_tensor(x) else 0\n"),
}
# Answers that lie about themselves: neutralised while a test runs (no points), not tampering
# with the grader (no flag).
LIARS = {
    "tensor-subclass": (
        "import torch\n\nclass Agreeable(torch.Tensor):\n    @classmethod\n"
        "    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
        "        if func is torch.equal:\n            return True\n"
        "        return super().__torch_function__(func, types, args, kwargs or {})\n\n"
        "def half(x):\n    return torch.zeros(2).as_subclass(Agreeable) if torch.is_tensor(x) else 0\n"),
    # The data and constants the setup cell made, which a test compares with.
    "setup-data-rebound": WRONG + "expected = np.zeros(3)",
    "setup-data-changed-in-place": WRONG + "expected[:] = 0",
    "setup-constant-rebound": WRONG + "TOLERANCE = 10.0",
    "setup-tensor-changed-in-place": (
        "import torch\n\ndef half(x):\n    return torch.zeros(2) if torch.is_tensor(x) else 0\n\n"
        "halves.zero_()\n"),
}
HONEST = {
    "honest-extras": (
        "%matplotlib inline\nimport warnings\nfrom concurrent.futures import ThreadPoolExecutor\n\n"
        "import matplotlib.pyplot as plt\n\nwarnings.filterwarnings('ignore', category=DeprecationWarning)\n\n\n"
        "def half(x):\n    return x / 2\n\n\n"
        "with ThreadPoolExecutor(2) as pool:\n    print(list(pool.map(half, [2, 4])))\n"
        "plt.plot([0, 1], [0, 1])\nplt.show()\n"
        "close = lambda a, b: abs(a - b) < 1e-9  # a student's own helper of the same name\n"),
    # Libraries changing their own state: logging's handlers, a warnings context, a lazily
    # imported submodule, a statistics call of the student's own.
    "honest-libraries": (
        "import logging\nimport statistics\nimport warnings\n\nimport numpy.linalg\n"
        "import numpy.polynomial\n\nlogging.basicConfig(level=logging.INFO)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.warn('kept, not shown')\n"
        "print(statistics.median([1, 2, 3]), numpy.linalg.norm([3.0, 4.0]), len(caught))\n\n\n"
        "def half(x):\n    return x / 2\n"),
}
MAX_SCORE = 6
# Scores every member must get (out of MAX_SCORE), and whether it must be flagged.
EXPECTED = {**{name: (0, True) for name in ATTACKS}, **{name: (0, False) for name in LIARS},
            "solution": (MAX_SCORE, False),
            "untouched": (0, False), **{name: (MAX_SCORE, False) for name in HONEST}}

FAMILY_YAML = (f"max_score: {MAX_SCORE}\ntimeout: 20\nsubmissions:\n"
               f"  solution: {{score: {MAX_SCORE}}}\n  untouched: {{score: 0}}\n")


def _test_cell(grade_id: str, source: str):
    return nbformat.v4.new_code_cell(
        source, metadata={"nbgrader": {**TEST_META, "grade_id": grade_id, "points": 1}})


def write_integrity_assignment(parent: Path) -> Path:
    """parent/toy-integrity/: a locked setup cell (which sends warnings to stdout, as the
    projects' setups do, and makes test data), the `half` solution cell, six test cells: one leaning
    on the setup's helpers, one importing numpy.testing itself, two using libraries no locked cell
    binds, one comparing tensors, one comparing with the setup's data."""
    adir = parent / "toy-integrity"
    adir.mkdir(parents=True)
    cells = [
        nbformat.v4.new_code_cell(
            "import math\nimport unittest\nimport warnings\n\nimport numpy as np\nimport torch\n\n\n"
            "def close(a, b):\n    return math.isclose(a, b, rel_tol=1e-9)\n\n\n"
            "def _warn_on_stdout(message, category, filename, lineno, file=None, line=None):\n"
            "    print(warnings.formatwarning(message, category, filename, lineno, line), end='')\n\n\n"
            "warnings.showwarning = _warn_on_stdout\n"
            "inputs, expected, TOLERANCE = np.array([2.0, 4.0, 6.0]), np.array([1.0, 2.0, 3.0]), 1e-9\n"
            "halves = torch.tensor([1.0, 2.0])",
            metadata={"nbgrader": {**LOCKED, "grade_id": "setup"}}),
        nbformat.v4.new_code_cell(
            "def half(x):\n    ### BEGIN SOLUTION\n    return x / 2\n    ### END SOLUTION",
            metadata={"nbgrader": {**SOLUTION_META, "grade_id": "half"}}),
        _test_cell("test-close",
            "assert close(half(3), 1.5)\nassert abs(half(-4)) == 2\n### BEGIN HIDDEN TESTS\n"
            "assert np.isclose(half(-5), -2.5) and math.isclose(half(1), 0.5)\n### END HIDDEN TESTS"),
        _test_cell("test-helpers",
            "from numpy.testing import assert_allclose\n"
            "unittest.TestCase().assertEqual(half(4), 2)\n### BEGIN HIDDEN TESTS\n"
            "assert_allclose(half(np.arange(3.0)), [0, 0.5, 1])\n### END HIDDEN TESTS"),
        _test_cell("test-loaded-library",
            "assert np.linalg.norm([half(6), half(8)]) == 5"),
        _test_cell("test-imported-library",
            "import statistics\n\nassert statistics.median([half(2), half(4), half(6)]) == 2"),
        _test_cell("test-torch",
            "assert torch.equal(half(torch.tensor([2.0, 4.0])), halves)"),
        _test_cell("test-setup-data",
            "assert np.allclose(half(inputs), expected, atol=TOLERANCE)"),
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, adir / "toy-integrity.ipynb")
    (adir / "submissions.yaml").write_text(FAMILY_YAML)
    return adir
