# Run in every grading kernel at startup, before any student code (engine.py sends this file's
# text as the kernel's last startup line). It keeps what test cells rely on as it was:
# - the attributes of builtins, unittest's TestCase, math, NumPy, torch and their testing modules
#   as they were at startup (functions, classes, modules), and those of any module or class that
#   the assignment's own locked cells bind;
# - the globals that locked cells bind to a module, function or class (`import numpy as np`,
#   `def close(a, b): ...`): a student's `np = FakeNumpy()` or `close = lambda *a: True` is undone.
# The engine calls record(names) after each locked cell and restore() before each test cell.
# This raises the bar against monkeypatching; it cannot be airtight, since student code shares
# the process with the tests (the engine's other defenses do not depend on it).
def _torchclass_guard():
    import builtins
    import math
    import sys
    import types
    import unittest

    kinds = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type)
    kept = {}    # id(module or class) -> (it, {attribute: value})
    names = {}   # global name -> the object a locked cell bound it to

    def keep(obj):
        if id(obj) not in kept:
            kept[id(obj)] = (obj, {k: v for k, v in vars(obj).items()
                                   if isinstance(v, kinds) or callable(v)})

    def keep_loaded():
        for name in ("numpy", "numpy.testing", "torch", "torch.testing", "torch.nn.functional",
                     "unittest.case"):
            if name in sys.modules:
                keep(sys.modules[name])

    def record(bound):
        ns = get_ipython().user_ns  # noqa: F821 (IPython's, in the kernel)
        for name in bound:
            value = ns.get(name)
            if isinstance(value, kinds):
                names[name] = value
                if isinstance(value, (types.ModuleType, type)):
                    keep(value)
        keep_loaded()

    def restore():
        ns = get_ipython().user_ns  # noqa: F821
        for name, value in names.items():
            if ns.get(name) is not value:
                ns[name] = value
        for obj, saved in list(kept.values()):
            now = vars(obj)
            for attr, value in saved.items():
                if now.get(attr) is not value:
                    try:
                        setattr(obj, attr, value)
                    except (AttributeError, TypeError):
                        pass

    try:  # loaded now, or a patch made when a test first touches it would be kept as the truth
        import numpy.testing  # noqa: F401
        if "torch" in sys.modules:
            import torch.testing  # noqa: F401
    except ImportError:
        pass
    for obj in (builtins, math, unittest.TestCase):
        keep(obj)
    keep_loaded()
    guard = types.ModuleType("_torchclass_guard")
    guard.record, guard.restore = record, restore
    sys.modules["_torchclass_guard"] = guard


_torchclass_guard()
del _torchclass_guard
