# Run in every grading kernel at startup, before any student code (engine/run.py sends this file's
# text as the kernel's last startup line). grading/README.md ("Grades student code cannot
# forge") gives the design; in short:
#
# - A PEP 578 audit hook goes in first. It cannot be removed, no Python object refers to it,
#   and every name it uses was captured here, before student code could replace anything, so
#   what it holds (the kernel's signing key, the snapshots, the evidence) is out of reach.
# - It vetoes the primitives that reach into the machinery (trace and profile functions, other
#   threads' frames, gc walks, new audit hooks, ctypes' raw memory and the CPython API,
#   /proc/<pid>/mem, this file's frames through a traceback) and, from student code, changing
#   the machinery's classes and functions. Every attempt is kept as evidence, with its cell.
# - Locked cells (setup and tests) never go through IPython's input pipeline: the engine sends
#   `run(nonce, source, names)`, which compiles and runs the source itself. Before and after,
#   the hook compares what tests rely on with its snapshots (sys.modules, builtins, the helper
#   modules, the shell's and kernel's methods and pipeline, critical classes, signal handlers,
#   timers, gc callbacks, threads running student code). It then signs the verdict (status,
#   error name, result, stderr or not, evidence) with the key and writes it to a file. The
#   engine trusts that file only, never the kernel's messages: a hijacked pipeline can lose a
#   result, which the engine reports as tampering, but it cannot sign one.
# - The hook signs only for `run` below: the frame asking must run run's own code object with
#   its closure unchanged, and no function can be rebuilt from that code.
#
# Every function defined in here reads only its arguments and the outer function's locals
# (never a global or a builtin by name), so a student's `len = ...` changes nothing;
# tests/grading/test_integrity.py checks that.


def _torchclass_sentinel():
    import _hashlib
    import _thread
    import builtins
    import gc
    import os
    import signal
    import sys
    import types

    _type, _issubclass, _len, _str, _repr, _tuple = type, issubclass, len, str, repr, tuple
    _type_t, _dict_t, _list_t, _object, _setattr = type, dict, list, object, setattr
    _hasattr = hasattr
    _TypeError, _ValueError = TypeError, ValueError
    _callable, _vars, _dict, _set, _id = callable, vars, dict, set, id
    _Exception, _BaseException, _RuntimeError, _OSError = Exception, BaseException, RuntimeError, OSError
    _frame, _ident, _current_frames = sys._getframe, _thread.get_ident, sys._current_frames
    _hmac, _sha = _hashlib.hmac_digest, _hashlib.openssl_sha256
    _open, _write, _close = os.open, os.write, os.close
    _O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    _items, _values = dict.items, dict.values
    _proxy_items, _proxy_values = types.MappingProxyType.items, types.MappingProxyType.values
    import _signal
    _getsignal, _setitimer, _getitimer = _signal.getsignal, signal.setitimer, signal.getitimer
    _timers = (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF)
    _setsignal, _SIGINT = _signal.signal, signal.SIGINT
    _func_code = types.FunctionType.__dict__["__code__"].__get__
    _func_closure = types.FunctionType.__dict__["__closure__"].__get__
    _cell_contents = types.CellType.__dict__["cell_contents"].__get__
    _staticmethod_t, _classmethod_t = staticmethod, classmethod
    _wrapped_func = {staticmethod: staticmethod.__dict__["__func__"].__get__,
                     classmethod: classmethod.__dict__["__func__"].__get__}
    _func_dict = types.FunctionType.__dict__["__dict__"].__get__
    _method_func = types.MethodType.__dict__["__func__"].__get__
    _type_dict = type.__dict__["__dict__"].__get__
    _type_module = type.__dict__["__module__"].__get__
    _type_qualname = type.__dict__["__qualname__"].__get__
    _module_dict = types.ModuleType.__dict__["__dict__"].__get__
    _FunctionType, _MethodType, _ModuleType = types.FunctionType, types.MethodType, types.ModuleType
    _BuiltinType, _TracebackType = types.BuiltinFunctionType, types.TracebackType
    _str_t, _bytes_t = str, bytes
    _exec, _eval, _compile = builtins.exec, builtins.eval, builtins.compile
    import functools
    import operator
    _map, _any, _zip, _is_not, _reversed = map, any, zip, operator.is_not, reversed
    _CodeType, _partial = types.CodeType, functools.partial
    _partial_func = functools.partial.__dict__["func"].__get__
    _func_name = types.FunctionType.__dict__["__name__"].__get__
    _builtin_name = types.BuiltinFunctionType.__dict__["__name__"].__get__
    _type_name = type.__dict__["__name__"].__get__
    _None = None
    ip = get_ipython()  # noqa: F821 (IPython's, in the kernel)

    # -- the key, read once and removed: no file and no variable of student code has it after this
    here = os.getcwd()
    key = b""
    try:
        fd = os.open(os.path.join(here, ".seal-key"), os.O_RDONLY | os.O_NOFOLLOW)
        key = os.read(fd, 128)
        os.close(fd)
        os.unlink(os.path.join(here, ".seal-key"))
    except OSError:
        pass
    results = os.path.join(here, ".seal") + "/"

    # -- library code: files under the interpreter's and the kernel library's read-only roots
    roots = set()
    for p in [sys.prefix, sys.base_prefix, os.path.dirname(os.__file__), *sys.path]:
        p = os.path.realpath(p) if p else ""
        if p and p != "/" and os.path.isdir(p) and not p.startswith(here) \
                and not os.access(p, os.W_OK):
            roots.add(p + "/")
    roots = _tuple(sorted(roots))
    built_in = frozenset(sys.builtin_module_names)  # C modules in the interpreter (itertools, _io)
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    try:
        from ipykernel.compiler import get_tmp_directory
        cell_dir = get_tmp_directory() + "/"
    except ImportError:
        cell_dir = here + "/"

    def trusted_file(name):
        if _type(name) is not _str_t or name == main_file:
            return False
        if name.startswith("<frozen "):
            return True
        for r in roots:
            if name.startswith(r):
                return True
        return False

    def module_file(name):
        m = modules_dict.get(name) if _type(name) is _str_t and name != "__main__" else _None
        return _module_dict(m).get("__file__") if _issubclass(_type(m), _ModuleType) else _None

    def trusted_object(obj, depth=0):
        """Whether obj (a callback, a finder, a handler) is library code; never runs obj's code."""
        t = _type(obj)
        if t is _FunctionType:
            return trusted_file(_func_code(obj).co_filename)
        if t is _MethodType:
            return depth < 3 and trusted_object(_method_func(obj), depth + 1)
        if t is _BuiltinType:
            return obj is not _exec and obj is not _eval and obj is not _compile
        if _issubclass(t, _type_t):
            return trusted_class(obj)
        return _issubclass(_type(t), _type_t) and trusted_class(t)

    def trusted_class(c):
        """A class is library code when the functions it defines are (a class of library code
        that defines none: when its module's file is, or it is a C module's, like Cython's
        shared _cython_3_x that has no file)."""
        seen = False
        for k in _type_dict(_type_t)["__mro__"].__get__(c):
            if k is _object or k is _ModuleType:
                continue
            for v in _tuple(_proxy_values(_type_dict(k))):
                t = _type(v)
                if t is _staticmethod_t or t is _classmethod_t:
                    v = _wrapped_func[t](v)
                if _type(v) is _FunctionType:
                    if not trusted_file(_func_code(v).co_filename):
                        return False
                    seen = True
        if seen:
            return True
        name = _type_module(c)
        if _type(name) is not _str_t:
            # Its dict's __module__ is a descriptor, not the name a class statement writes
            # there: a C extension's type (Cython's cython_function_or_method).
            return True
        if name in built_in or trusted_file(module_file(name)):
            return True
        m = modules_dict.get(name) if _type(name) is _str_t and name != "__main__" else _None
        return _type(m) is _ModuleType and _module_dict(m).get("__file__") is _None and genuine_module(m)

    def cell_of(f):
        """The student cell (ipykernel's file name stem) nearest on the stack from f, or ''."""
        while f is not _None:
            name = f.f_code.co_filename
            if _type(name) is _str_t and name.startswith(cell_dir) and name.endswith(".py"):
                return name[_len(cell_dir):-3]
            f = f.f_back
        return ""

    # -- evidence: (what, cell) pairs, kept by the hook alone
    evidence = []
    reported = [0]

    def note(what, f):
        if _len(evidence) < 200:
            evidence.append((what, cell_of(f)))

    # -- snapshots (of the helper modules tests import, loaded now so that no fake is first)
    for name in ("numpy.testing", "unittest.mock") + (("torch.testing",) if "torch" in sys.modules else ()):
        try:
            __import__(name)
        except ImportError:
            pass
    modules_dict = sys.modules
    modules_seen = _dict(sys.modules)
    builtins_dict = _module_dict(builtins)
    builtins_seen = _dict(builtins_dict)
    helper_names = ("math", "unittest", "unittest.case", "numpy", "numpy.testing", "torch",
                    "torch.testing", "torch.nn", "torch.nn.functional", "traceback", "types",
                    "torchclass_course", "torchclass_course.checks")
    helpers = {}  # module name -> (module, {attr: value} of its functions, classes, modules)

    def keep_module(m, strict=False):
        """strict: any change is reported (the helpers tests use); otherwise only a change to
        something that is not library code (a module a locked cell imported, such as pyplot,
        which rebinds its own functions when it picks a backend)."""
        if _type(m) is not _ModuleType:
            return
        d = _module_dict(m)
        name = d.get("__name__")
        if _type(name) is _str_t and name not in helpers and name not in ("sys", "builtins"):
            helpers[name] = (m, {k: v for k, v in _items(d) if _type(k) is _str_t
                                 and (_callable(v) or _type(v) is _ModuleType)}, strict)

    def keep_loaded_helpers():
        for name in helper_names:
            keep_module(modules_dict.get(name), True)

    # Classes whose methods decide what a cell runs and what the kernel reports, and those tests
    # compare with: their dicts must not change at all. This catches a change made through
    # library code (unittest.mock, say), which the hook's veto lets through.
    kernel = getattr(ip, "kernel", None)
    machinery = [o for o in (ip, kernel, getattr(kernel, "session", None),
                             getattr(ip, "displayhook", None), getattr(ip, "display_pub", None),
                             getattr(ip, "events", None), getattr(ip, "compile", None),
                             getattr(ip, "input_transformer_manager", None)) if o is not None]
    import unittest
    _TestCase = unittest.TestCase
    criticals = []  # (class, {attr: value})
    critical_seen = _set()

    def keep_criticals():
        found = [c for o in machinery for c in _type(o).__mro__ if c is not _object]
        found.append(_TestCase)
        for name, attr in (("torch", "Tensor"), ("torch.nn", "Module"), ("torch.nn", "Parameter")):
            m = modules_dict.get(name)
            c = _module_dict(m).get(attr) if _type(m) is _ModuleType else _None
            if c is not _None and _issubclass(_type(c), _type_t):
                found.append(c)
        for c in found:
            if _id(c) not in critical_seen:
                critical_seen.add(_id(c))
                criticals.append((c, _dict(_type_dict(c))))

    # Instances whose own attributes could shadow their class's methods.
    instances = []
    for o in machinery:
        if hasattr(o, "__dict__"):
            instances.append((o, _type(o), {k: v for k, v in _items(_vars(o)) if _callable(v)}))
    handler_maps = []  # (dict, {key: function})
    for name in ("shell_handlers", "control_handlers"):
        d = getattr(kernel, name, None)
        if _type(d) is _dict_t:
            funcs = {}
            for k, v in _items(d):
                funcs[k] = getattr(v, "__func__", v)
            handler_maps.append((d, funcs))
    tm = getattr(ip, "input_transformer_manager", None)
    pipeline = []  # (label, list, tuple of what it held)
    for label, lst in (("input_transformers_cleanup", getattr(ip, "input_transformers_cleanup", None)),
                       ("input_transformers_post", getattr(ip, "input_transformers_post", None)),
                       ("ast_transformers", getattr(ip, "ast_transformers", None)),
                       ("cleanup_transforms", getattr(tm, "cleanup_transforms", None)),
                       ("line_transforms", getattr(tm, "line_transforms", None)),
                       ("token_transformers", getattr(tm, "token_transformers", None)),
                       ("sys.meta_path", sys.meta_path), ("sys.path_hooks", sys.path_hooks),
                       ("gc.callbacks", gc.callbacks)):
        if _type(lst) is _list_t:
            pipeline.append((label, lst, _tuple(lst)))
    events = getattr(getattr(ip, "events", None), "callbacks", None)
    excepthook = sys.excepthook
    signals = {}
    for n in signal.valid_signals():
        try:
            signals[n] = _getsignal(n)
        except (ValueError, OSError):
            pass
    threads_seen = _set(_current_frames())
    # The machinery's packages: changing their classes and functions from student code is vetoed.
    packages = frozenset(("IPython", "ipykernel", "jupyter_client", "jupyter_core", "zmq",
                          "traitlets", "tornado", "comm", "unittest", "numpy", "torch", "pathlib",
                          "traceback", "types", "inspect", "json", "io", "math", "builtins",
                          "torchclass_course"))
    _func_module = types.FunctionType.__dict__["__module__"].__get__

    def in_packages(module):
        return _type(module) is _str_t and module.split(".")[0] in packages

    keep_loaded_helpers()
    keep_criticals()

    # -- names locked cells bind: put back before each locked cell, so a student's `np = fake`
    # or `close = lambda *a: True` changes nothing (rebinding a name is not tampering)
    user_ns = ip.user_ns
    bound = {"__builtins__": user_ns.get("__builtins__")}

    # Data locked cells bind (x_test, TARGET_ACCURACY) is the tests' too: a student's
    # `x_test = x_train[:500]` is put back like a rebound module, and a tensor or array changed
    # in place (`y_test.copy_(predictions)`) gets its bytes back. No torch operation runs for
    # this: a student can register their own kernel for any aten op (torch.library), and the
    # hook must never call student code. A tensor is read through its NumPy view (Tensor.numpy
    # reaches no kernel), bytes are compared and written back through a memoryview.
    data = {}  # name -> (shape, the bytes a locked cell left)
    _ndarray = _np_bytes = _Tensor = _t_numpy = _None
    _memoryview = memoryview
    if "numpy" in sys.modules:
        _ndarray = sys.modules["numpy"].ndarray
        _np_bytes = _ndarray.__dict__["tobytes"]
    if "torch._C" in sys.modules:
        _Tensor, _t_numpy = sys.modules["torch"].Tensor, sys.modules["torch._C"].TensorBase.__dict__["numpy"]

    def array_of(value):
        """The NumPy array value is or views (a CPU tensor's memory), or None."""
        t = _type(value)
        if _Tensor is not _None and t is _Tensor:
            try:
                value = _t_numpy(value)  # refuses tensors that need grad or live on a GPU
            except _Exception:
                return _None
            t = _type(value)
        if _ndarray is not _None and t is _ndarray and value.dtype.kind in "biufcmM":
            return value
        return _None

    def keep_data(name, value):
        a = array_of(value)
        if a is _None:
            data.pop(name, _None)
        else:
            data[name] = (a.shape, _np_bytes(a))

    def restore_data(found):
        for name, (shape, kept) in _tuple(_items(data)):
            a = array_of(bound.get(name))
            if a is not _None and a.shape == shape and _np_bytes(a) == kept:
                continue
            if a is not _None and a.shape == shape:
                try:
                    _memoryview(a).cast("B")[:] = kept  # C-contiguous and writable, or it raises
                    continue
                except (_ValueError, _TypeError):
                    pass
            found.append(f"{name}, which a locked cell made, was changed in place")

    def modes_active():
        for _, length, before in torch_stacks:
            if length() > before:
                return True
        return False

    def record_bound(names):
        modes = modes_active()  # then torch would call student code: no copies (check reports it)
        for name in names:
            if _type(name) is not _str_t or name not in user_ns:
                continue
            value = user_ns.get(name)
            t = _type(value)
            bound[name] = value
            if not modes:
                keep_data(name, value)
            if t is _ModuleType or t is _FunctionType or t is _BuiltinType or _issubclass(t, _type_t):
                keep_module(value)
        keep_loaded_helpers()
        keep_criticals()
        keep_torch_stacks()

    def genuine_module(m):
        """A module the import system loaded for a library, not one put together by hand: a
        module (or a subclass defined in library code) with no function of student code."""
        t = _type(m)
        if t is not _ModuleType and not (_issubclass(t, _ModuleType) and trusted_object(m)):
            return False
        d = _module_dict(m)
        if d.get("__file__") is not _None and trusted_file(d.get("__file__")):
            return True
        for v in _tuple(_values(d)):
            if _type(v) is _FunctionType and not trusted_file(_func_code(v).co_filename):
                return False
        return True

    def wraps(new, old):
        """new is library code wrapping old: with functools.wraps, as Lightning wraps
        torch.compile, or holding it in its closure, as IPython wraps pyplot's
        draw_if_interactive."""
        if _type(new) is not _FunctionType or not trusted_file(_func_code(new).co_filename):
            return False
        if _func_dict(new).get("__wrapped__") is old:
            return True
        for c in _func_closure(new) or ():
            try:
                if _cell_contents(c) is old:
                    return True
            except _ValueError:  # an empty cell
                pass
        return False

    def is_in(item, items):
        for x in items:
            if x is item:
                return True
        return False

    # -- every library module's functions, classes and submodules. A data loader or metric a
    # hidden test imports itself (sklearn.datasets.load_digits, numpy.linalg.norm) is as much
    # the test's as its helpers, and assigning to a module attribute raises no audit event: so
    # each check compares what library modules hold with what they held. Library code rebinding
    # a name to its own function of that name (pyplot picking a backend) is its business; a
    # change to anything else, from student code or a student's call of library code, is not.
    # Changes made while a locked setup cell runs, by that cell's own code, are accepted.
    libs = {}  # name -> [module, its dict, {attr: value}, keys, values, dict size]
    not_libs = ("sys", "builtins", "__main__", "__mp_main__", "_torchclass_sentinel")
    missing = _object()

    def watched(k, v):
        return _type(k) is _str_t and (_callable(v) or _issubclass(_type(v), _ModuleType))

    def student_made(v, depth=0):
        """v is, or wraps, code from a student's cell or from a file of the student's (their
        working dir). A value first seen in a module is judged by this, not by what trusted_*
        can prove: libraries build their own with exec (namedtuples, dataclasses, SciPy's
        solvers) and in C (Cython functions, exception types), and none of that is a
        student's. Whatever a student cell defines, wrapped or not, is."""
        if depth > 3:
            return True
        t = _type(v)
        if t is _FunctionType:
            name = _func_code(v).co_filename
            return _type(name) is not _str_t or name.startswith((cell_dir, here))
        if t is _MethodType:
            return student_made(_method_func(v), depth + 1)
        if _issubclass(t, _partial):
            return student_made(_partial_func(v), depth + 1)
        if _issubclass(t, _ModuleType):
            for x in _tuple(_values(_module_dict(v))):
                if _type(x) is _FunctionType and student_made(x, depth + 1):
                    return True
            return False
        if _issubclass(t, _type_t):
            for k in _type_dict(_type_t)["__mro__"].__get__(v):
                if k is _object:
                    continue
                for x in _tuple(_proxy_values(_type_dict(k))):
                    tx = _type(x)
                    if tx is _staticmethod_t or tx is _classmethod_t:
                        x = _wrapped_func[tx](x)
                        tx = _type(x)
                    if (tx is _FunctionType or _issubclass(tx, _partial)) and student_made(x, depth + 1):
                        return True
            return False
        if student_made(t, depth + 1):
            return True
        if _hasattr(v, "__dict__"):
            inner = _vars(v).get("__wrapped__", missing)
            return inner is not missing and student_made(inner, depth + 1)
        return False

    def same_name(v, attr):
        t = _type(v)
        if t is _MethodType:  # the kernel's own getpass, put in getpass's place while a cell runs
            v = _method_func(v)
            t = _type(v)
        if t is _FunctionType:
            return _func_name(v) == attr
        if t is _BuiltinType:
            return _builtin_name(v) == attr
        return _issubclass(t, _type_t) and _type_name(v) == attr

    def rebinding(name, attr, new):
        """Library code's own kind of change: a library function (Lightning puts its own
        warnings.formatwarning in place at import), a builtin or class of the same name, a
        or the submodule the import system loaded. Not: a
        student's function, nor a library object built around something else
        (functools.partial, numpy.vectorize, a bound method of another name)."""
        t = _type(new)
        if _issubclass(t, _ModuleType):
            return genuine_module(new) and modules_dict.get(name + "." + attr) is new
        if t is _FunctionType:
            return trusted_file(_func_code(new).co_filename)
        return same_name(new, attr) and trusted_object(new)

    def snapshot(entry, attrs):
        d = entry[1]
        entry[2], entry[3] = attrs, _tuple(attrs)
        entry[4], entry[5] = _tuple(_map(attrs.get, entry[3])), _len(d)

    def code_of(codes, code):
        """codes, with code and every code object nested in it."""
        codes.add(code)
        for c in code.co_consts:
            if _type(c) is _CodeType:
                code_of(codes, c)
        return codes

    def accepted(new, accept):
        if accept is True:
            return True
        return accept is not _None and (not student_made(new) or (
            _type(new) is _FunctionType and _func_code(new) in accept))

    def library_changes(found, accept=_None):
        """accept: None to report every change; the code objects of the locked setup cell that
        just ran, whose own changes are taken into the snapshot; True (start-up): take all."""
        for name, m in _tuple(_items(modules_dict)):
            entry = libs.get(name)
            if entry is not _None and entry[0] is m:
                d = entry[1]
                if _len(d) == entry[5] and not _any(_map(_is_not, entry[4], _map(d.get, entry[3]))):
                    continue
                attrs, changed, flagged = entry[2], False, False
                for attr, old in _zip(entry[3], entry[4]):
                    new = d.get(attr, missing)
                    if new is old:
                        continue
                    if new is missing:
                        if accept is _None:
                            found.append(f"{name}.{attr} was deleted")
                            continue
                        del attrs[attr]
                    elif rebinding(name, attr, new) or accepted(new, accept):
                        attrs[attr] = new
                    else:
                        found.append(f"{name}.{attr} was replaced")
                        continue
                    changed = True
                if _len(d) != entry[5]:
                    for attr, new in _tuple(_items(d)):
                        if attr in attrs or not watched(attr, new):
                            continue
                        if student_made(new) and not accepted(new, accept):
                            found.append(f"{name}.{attr} was added (student code)")
                            flagged = True
                            continue
                        attrs[attr] = new
                        changed = True
                size = entry[5]
                if changed:
                    snapshot(entry, attrs)
                if flagged:
                    entry[5] = size  # looked at again next time, and reported again
                elif not changed:
                    entry[5] = _len(d)  # only data was added (a cache, a flag): not watched
                continue
            if _type(name) is not _str_t or name in not_libs or name in helpers or \
                    not _issubclass(_type(m), _ModuleType):
                continue
            d = _module_dict(m)
            f = d.get("__file__")
            if not (accept is True or (_type(f) is _str_t and trusted_file(f))) or not genuine_module(m):
                continue
            attrs = {}
            for attr, v in _tuple(_items(d)):
                if watched(attr, v):
                    if accept is True or not student_made(v) or accepted(v, accept):
                        attrs[attr] = v
                    else:
                        found.append(f"{name}.{attr} is student code")
            entry = [m, d, _None, _None, _None, 0]
            snapshot(entry, attrs)
            libs[name] = entry
        return found

    # torch's mode stacks: a TorchFunctionMode or TorchDispatchMode a student cell enters and
    # never leaves sees, and can answer, every torch call a test makes after it.
    torch_stacks = []  # (what, the stack-length function, its length before student code)
    # ... and while a test cell runs, no Tensor subclass's __torch_function__ or
    # __torch_dispatch__ is called: a student model's output that is a subclass answering
    # torch.equal or == with True then computes as the plain tensor it is. A tuple, fixed
    # now (torch assignments import torch before this file runs): run's closure, where it
    # sits, is readable by student code, and only its cells' identity is checked.
    torch_c = _module_dict(modules_dict["torch._C"]) if "torch._C" in modules_dict else {}
    torch_guards = _tuple(torch_c[name] for name in ("DisableTorchFunctionSubclass", "_DisableTorchDispatch")
                          if _issubclass(_type(torch_c.get(name)), _type_t))

    # torch's dispatcher: torch.library (or torch._C._dispatch_library) lets any code put its
    # own kernel in place of aten::equal's or aten::eq's for the CPU, and every torch.equal a
    # test makes then answers what the student likes. Each check reads the kernel table of
    # every operator (the dispatcher's own dump, 40-90 ms for about 3,700 operators) and
    # compares the lines of the keys a CPU or GPU computation runs through with their state
    # before student code; new operators, and kernels for other keys (Meta, fake tensors,
    # functorch), are libraries' business.
    kernels = {}  # operator -> (its whole dump, the lines that matter)
    dispatcher = []  # (all operator names, one operator's dump)
    kernel_keys = frozenset(("CPU", "CUDA", "CompositeImplicitAutograd", "CompositeExplicitAutograd",
                             "CompositeExplicitAutogradNonFunctional", "Autograd", "AutogradCPU",
                             "AutogradCUDA", "AutogradOther", "BackendSelect", "Undefined"))

    def kernel_lines(dump):
        lines = []
        for line in dump.splitlines():
            if line.split(":", 1)[0].split(" ", 1)[0] in kernel_keys:
                lines.append(line)
        return _tuple(lines)

    def kernel_changes(found):
        if not dispatcher:
            return
        names, dump = dispatcher[0]
        for op in names():
            now = dump(op)
            before = kernels.get(op)
            if before is _None:
                kernels[op] = (now, kernel_lines(now))
            elif now != before[0]:
                lines = kernel_lines(now)
                if lines != before[1]:
                    found.append(f"torch's kernel for {op} was replaced")
                else:
                    kernels[op] = (now, lines)

    def keep_torch_stacks():
        if torch_stacks or modules_dict.get("torch._C") is _None:
            return
        d = _module_dict(modules_dict["torch._C"])
        names, dump = d.get("_dispatch_get_all_op_names"), d.get("_dispatch_dump")
        if _type(names) is _BuiltinType and _type(dump) is _BuiltinType:
            dispatcher.append((names, dump))
            kernel_changes([])
        for what, fn in (("a torch function mode", "_len_torch_function_stack"),
                         ("a torch dispatch mode", "_len_torch_dispatch_stack")):
            f = d.get(fn)
            if _type(f) is _BuiltinType:
                torch_stacks.append((what, f, f()))

    def check():
        """What differs from the snapshots; the names locked cells bound are put back first."""
        for name, value in _items(bound):
            if user_ns.get(name) is not value:
                user_ns[name] = value
        found = []
        if sys.modules is not modules_dict:
            found.append("sys.modules was replaced")
        for name, m in _tuple(_items(modules_dict)):
            if _type(name) is not _str_t:
                found.append("a non-string key was put in sys.modules")
                continue
            before = modules_seen.get(name, modules_seen)
            if before is modules_seen:
                modules_seen[name] = m
                if name.split(".")[0] in packages and not genuine_module(m):
                    found.append(f"sys.modules[{name!r}] is not the library's module")
            elif before is not m:
                found.append(f"sys.modules[{name!r}] was replaced")
        for name in helpers:
            if modules_dict.get(name) is _None:
                found.append(f"sys.modules[{name!r}] was removed")
        for name, value in _items(builtins_seen):
            now = builtins_dict.get(name, builtins_seen)
            if now is not value and not (now is not builtins_seen and trusted_object(now)):
                found.append(f"builtins.{name} was replaced")
        library_changes(found)
        active = [what for what, length, before in torch_stacks if length() > before]
        found += [f"{what} was left active" for what in active]
        if not active:
            restore_data(found)
        kernel_changes(found)
        for name, (m, attrs, strict) in _tuple(_items(helpers)):
            now = _module_dict(m)
            for attr, value in _items(attrs):
                new = now.get(attr, attrs)
                if new is not value and (new is attrs or not (
                        wraps(new, value) if strict else trusted_object(new))):
                    found.append(f"{name}.{attr} was replaced")
            for attr in now:  # a module global that shadows a builtin its functions use
                if attr not in attrs and attr in builtins_seen and _callable(now[attr]) \
                        and not trusted_object(now[attr]):
                    found.append(f"{name}.{attr} was added")
        for c, attrs in criticals:
            now = _type_dict(c)
            label = f"{_type_module(c)}.{_type_qualname(c)}"
            for attr, value in _proxy_items(now):
                # Data Python and libraries cache on classes (copyreg's __slotnames__) is no
                # method: only a callable, or a descriptor, decides what the class does.
                if attrs.get(attr, attrs) is not value and (
                        _callable(value) or _hasattr(_type(value), "__get__")):
                    found.append(f"{label}.{attr} was replaced or added")
            for attr in attrs:
                if attr not in now:
                    found.append(f"{label}.{attr} was deleted")
        for obj, cls, attrs in instances:
            if _type(obj) is not cls:
                found.append(f"the {_type_qualname(cls)} object's class was changed")
            for attr, value in _tuple(_items(_vars(obj))):
                if _callable(value) and attrs.get(attr, attrs) is not value \
                        and not trusted_object(value):
                    found.append(f"{_type_qualname(cls)}.{attr} was overridden on the instance")
        for d, funcs in handler_maps:
            for k, v in _tuple(_items(d)):
                f = _method_func(v) if _type(v) is _MethodType else v
                if funcs.get(k, funcs) is not f:
                    found.append(f"the kernel's {k!r} handler was replaced")
        for label, lst, items in pipeline:
            for item in _tuple(lst):
                if not is_in(item, items) and not trusted_object(item):
                    found.append(f"{label} was given student code")
        if _type(events) is _dict_t:
            for name, lst in _tuple(_items(events)):
                for item in (_tuple(lst) if _type(lst) is _list_t else ()):
                    if not trusted_object(item):
                        found.append(f"an {name!r} event callback is student code")
        custom = _vars(ip).get("custom_exceptions", ())
        if _type(custom) is not _tuple or _len(custom) != 0:
            found.append("a custom exception handler was set on the shell")
        hook_now = sys.excepthook
        if hook_now is not excepthook and not trusted_object(hook_now):
            t = _type(hook_now)
            what = _func_code(hook_now).co_filename if t is _FunctionType else _type_qualname(t)
            found.append(f"sys.excepthook was replaced ({what})")
        for n, handler in _items(signals):
            try:
                now = _getsignal(n)
            except (_ValueError, _OSError):
                continue
            if now is not handler and now is not deferred and _callable(now) and \
                    not trusted_object(now):
                found.append(f"a handler for signal {n} is student code")
        for which in _timers:
            if _getitimer(which) != (0.0, 0.0):
                _setitimer(which, 0)
                found.append("an interval timer was armed")
        me = _ident()
        for tid, f in _tuple(_items(_current_frames())):
            if tid == me or tid in threads_seen:
                continue
            while f is not _None:
                if not trusted_file(f.f_code.co_filename):
                    found.append("a thread running student code was alive")
                    break
                f = f.f_back
        return _list_t(_dict.fromkeys(found))  # once each: a helper module is a library too

    library_changes([], True)  # what library modules hold before any student code runs
    keep_torch_stacks()

    # -- the hook
    inside = _set()  # threads now in the hook: its own audited calls pass straight through
    opened, signed = {}, _set()
    ours = _set()     # code objects of this file (their frames are not to be handed out)

    def collect(code):
        ours.add(code)
        for c in code.co_consts:
            if _type(c) is _type(code):
                collect(c)

    watch = frozenset((
        "sys.settrace", "sys.setprofile", "sys._current_frames", "gc.get_objects",
        "gc.get_referrers", "gc.get_referents", "sys.addaudithook", "ctypes.string_at",
        "ctypes.wstring_at", "ctypes.PyObj_FromPtr", "ctypes.cdata", "ctypes.dlsym",
        "ctypes.call_function", "object.__setattr__", "object.__delattr__", "object.__getattr__",
        "code.__new__", "function.__new__", "open", "torchclass.begin", "torchclass.end",
    ))
    always_denied = {
        "sys.settrace": "sys.settrace()", "sys.setprofile": "sys.setprofile()",
        "sys._current_frames": "reading other threads' frames",
        "gc.get_objects": "gc.get_objects()", "gc.get_referrers": "gc.get_referrers()",
        "gc.get_referents": "gc.get_referents()", "sys.addaudithook": "adding an audit hook",
    }
    ctypes_memory = {
        "ctypes.string_at": "reading raw memory (ctypes)", "ctypes.wstring_at": "reading raw memory (ctypes)",
        "ctypes.PyObj_FromPtr": "turning addresses into objects (ctypes)",
        "ctypes.cdata": "mapping raw memory (ctypes)",
    }
    denied_symbols = ("Py", "_Py", "ptrace", "process_vm_", "prctl", "syscall", "mprotect",
                      "dlopen", "dlsym", "pthread_kill", "memmove", "memcpy", "memset")
    try:
        import ctypes
        raw_memory = {ctypes._memmove_addr, ctypes._memset_addr, ctypes._string_at_addr,
                      ctypes._cast_addr}
        ctypes_dir = os.path.dirname(ctypes.__file__) + "/"
    except (ImportError, AttributeError):
        raw_memory, ctypes_dir = _set(), "\0"
    holder = {}  # run, its code, its closure cells and what they held

    def judge(event, args, f):
        """Why the event is refused ('' if it is not). f: the frame that raised it."""
        if event == "object.__getattr__":
            if args[1] == "tb_frame" and _type(args[0]) is _TracebackType:
                tf = args[0].tb_frame
                if tf.f_code in ours:
                    return "reading the grader's frames"
            return ""
        if event == "object.__setattr__" or event == "object.__delattr__":
            obj, t = args[0], _type(args[0])
            student = not trusted_file(f.f_code.co_filename if f else _None)
            if t is _FunctionType and obj is holder.get("run"):
                return "changing the grader's functions"
            code_swap = _type(args[1]) is _str_t and args[1] == "__code__"
            if t is _FunctionType and in_packages(_func_module(obj)) and (code_swap or student):
                return f"changing the library function {obj.__qualname__}"
            if student and _issubclass(t, _type_t) and \
                    (in_packages(_type_module(obj)) or obj is out_class):
                return f"changing the class {_type_module(obj)}.{_type_qualname(obj)}"
            return ""
        if event == "open":
            path = args[0]
            if _type(path) is _bytes_t:
                path = path.decode("utf-8", "replace")
            if _type(path) is _str_t and path.startswith("/proc/") and \
                    (path.endswith("/mem") or "/map_files/" in path):
                return "opening a process's memory"
            return ""
        # ctypes is library code's own business (fsspec looks up CPython's API at import);
        # from student code, raw memory and the interpreter's internals are refused.
        g = f
        while g is not _None and _type(g.f_code.co_filename) is _str_t and \
                g.f_code.co_filename.startswith(ctypes_dir):
            g = g.f_back  # ctypes' own wrappers (string_at, ...): who called them?
        student = not trusted_file(g.f_code.co_filename if g else _None)
        if event == "ctypes.dlsym":
            name = args[1] if _len(args) > 1 else _None
            if student and _type(name) is _str_t and name.startswith(denied_symbols):
                return f"looking up {name} through ctypes"
            return ""
        if event == "ctypes.call_function":
            return "raw memory access (ctypes)" if student and args[0] in raw_memory else ""
        if event in ctypes_memory:
            return ctypes_memory[event] if student else ""
        if event == "code.__new__":
            if _len(args) > 1 and trusted_file(args[1]) and \
                    not trusted_file(f.f_code.co_filename if f else _None):
                return "building code that claims to be library code"
            return ""
        if event == "function.__new__":
            return "rebuilding the grader's functions" if args[0] in ours else ""
        return always_denied.get(event, event)

    def sealed_caller(f):
        """f, if it runs `run`'s own code with its closure as it was."""
        if f is _None or f.f_code is not holder.get("code"):
            return _None
        for cell, value in holder["cells"]:
            if cell.cell_contents is not value:
                return _None
        return f

    def take_evidence():
        new = evidence[reported[0]:]
        reported[0] = _len(evidence)
        return new

    def safe_check():
        try:
            return check()
        except _Exception as exc:
            return [f"the grader's check failed ({_type_qualname(_type(exc))})"]

    def safe_library_changes(accept):
        try:
            return library_changes([], accept)
        except _Exception as exc:
            return [f"the grader's check of library modules failed ({_type_qualname(_type(exc))})"]

    def sealed(event, args, f):
        if sealed_caller(f) is _None:
            note("a forged call to the grader's seal", f)
            return "not the grader's own call"
        nonce = args[0]
        if _type(nonce) is not _str_t or _len(nonce) != 32 or not nonce.isalnum():
            return "a malformed seal"
        loc = f.f_locals
        if event == "torchclass.begin":
            if nonce in opened or nonce in signed:
                note("a locked cell was run twice", f)
            source = loc.get("source")
            digest = _sha(source.encode("utf-8", "replace")).hexdigest() \
                if _type(source) is _str_t else ""
            found = safe_check() if loc.get("graded") is not False else safe_library_changes(_None)
            opened[nonce] = (found, take_evidence(), digest)
            return "tampering was found before this cell" if opened[nonce][0] or opened[nonce][1] else ""
        before = opened.pop(nonce, _None)
        if before is _None or nonce in signed:
            note("a sealed result was asked for twice", f)
            return ""
        signed.add(nonce)
        names = loc.get("names")
        record_bound(names if _type(names) is _tuple else ())
        found, new, digest = before
        graded = loc.get("graded") is not False
        if graded:
            found = found + safe_check()
        else:  # a setup cell: what its own code changed in library modules is the new normal
            code = loc.get("code")
            found = found + safe_library_changes(
                code_of(_set(), code) if _type(code) is _CodeType else _set())
        new = new + take_evidence()
        status, ename = loc.get("status"), loc.get("ename")
        result, stderr = loc.get("result_text"), loc.get("had_stderr")
        fields = [nonce, digest, "graded" if graded else "setup",
                  status if status == "ok" or status == "error" or status == "stopped" else "error",
                  ename if _type(ename) is _str_t else "Error",
                  result if _type(result) is _str_t else "",
                  "1" if stderr is True else "0"]
        cells = [f"{what}\x1f{cell}" for what, cell in new]
        body = "\x1e".join(["\x1f".join(fields), "\x1d".join(_dict.fromkeys(found)), "\x1d".join(cells)])
        data = body.encode("utf-8", "replace")
        mac = _hmac(key, data, "sha256").hex().encode()
        try:
            # Group-readable: in a Kubernetes pod the grader reads it as another uid of our group.
            fd = _open(results + nonce, _O_NEW, 0o640)
        except _OSError:
            note("the sealed result's file was taken", f)
            return ""
        try:
            _write(fd, mac + b"\n" + data)
        finally:
            _close(fd)
        return ""

    # The hook is max(event, args, key=...): the key function sees the event first, then its
    # arguments, and returns 0 (allowed) or a Veto, whose comparison raises the refusal. So the
    # refusal is raised from a frame that holds only its message, after the hook's own frames
    # are gone: a traceback of it leads nowhere near the key.
    veto_ns = {"__builtins__": {"__build_class__": builtins.__build_class__}, "__name__": "veto"}
    _exec("class Veto:\n    __slots__ = ('error',)\n"
          "    def __init__(self, error):\n        self.error = error\n"
          "    def __gt__(self, other):\n        raise self.error\n"
          "    __lt__ = __ge__ = __le__ = __gt__\n", veto_ns)
    Veto = veto_ns.pop("Veto")
    veto_ns.clear()

    class Denied(_RuntimeError):
        pass

    pending = {}  # thread -> the event whose arguments come next

    def key_of(item):
        me = _ident()
        if me in inside:
            return 0
        if me not in pending:
            pending[me] = item
            return 0
        event = pending.pop(me)
        if event not in watch:
            return 0
        inside.add(me)
        why = ""
        try:
            f = _frame(1)
            if event == "torchclass.begin" or event == "torchclass.end":
                why = sealed(event, item, f)
            else:
                why = judge(event, item, f)
                if why:
                    note(why, f)
        except _BaseException as exc:
            why = f"the grader's guard failed ({_type_qualname(_type(exc))})"
        finally:
            inside.discard(me)
        return Veto(Denied(f"torchclass grading: {why} is not allowed in a graded notebook")) if why else 0

    hook = functools.partial(max, key=key_of)

    # -- run(): the engine's way into the kernel for locked cells (setup and tests)
    audit = sys.audit
    out_class = _type("SealedOutput", (), {
        "__init__": lambda self: _setattr(self, "parts", []),
        "write": lambda self, s: (self.parts.append(s if _type(s) is _str_t else _str(s)), _len(s))[1],
        "flush": lambda self: _None, "isatty": lambda self: False,
        "writable": lambda self: True, "encoding": "utf-8",
    })
    import ast as _ast
    import json as _json
    import traceback as _traceback
    _Expr, _Expression, _ONLY_AST = _ast.Expr, _ast.Expression, _ast.PyCF_ONLY_AST
    _format, _dumps = _traceback.format_exception, _json.dumps
    _sys, _ns, _join = sys, user_ns, "".join

    def deferred(signum, frame):
        """SIGINT while the grader's own part of a locked cell runs. The worker's interrupt
        for a cell past its time can arrive late, after that cell ended (a loaded machine): raised
        here it would break the seal and show the grader's frames to IPython's traceback, which
        reads as tampering. It is dropped: the cell it was meant for is over."""

    def run(nonce, source, names=(), graded=True):
        try:
            interrupt = _setsignal(_SIGINT, deferred)  # ipykernel's handler while a cell runs
        except (_ValueError, _TypeError):  # not the main thread: a forged call, noted below
            interrupt = _None
        try:
            status, ename, result_text, had_stderr = "ok", "", "", False
            evalue, tb, out, err = "", [], out_class(), out_class()
            saved = (_sys.stdout, _sys.stderr)
            try:
                audit("torchclass.begin", nonce)
            except _BaseException as exc:
                status, ename, evalue = "stopped", "IntegrityError", _str(exc)
            if status == "ok":
                _sys.stdout, _sys.stderr = out, err
                try:
                    tree = _compile(source, "<locked cell>", "exec", _ONLY_AST)
                    last = tree.body.pop() if tree.body and _type(tree.body[-1]) is _Expr else _None
                    code = _compile(tree, "<locked cell>", "exec")
                    if interrupt is not _None:
                        _setsignal(_SIGINT, interrupt)  # the cell's own code may be interrupted
                    entered = []
                    try:
                        for guard in (torch_guards if graded else ()):
                            g = guard()
                            g.__enter__()
                            entered.append(g)
                        _exec(code, _ns)
                        if last is not _None:
                            value = _eval(_compile(_Expression(last.value), "<locked cell>", "eval"), _ns)
                            if value is not _None:
                                result_text = _repr(value)  # noqa: F841 (the hook reads it)
                    finally:
                        for g in _reversed(entered):
                            g.__exit__(_None, _None, _None)
                        if interrupt is not _None:
                            _setsignal(_SIGINT, deferred)
                except _BaseException as exc:
                    status, ename = "error", _type(exc).__name__  # noqa: F841 (the hook reads it)
                    try:
                        evalue = _str(exc)
                        # From the cell's own frame on: this function's frame is not for reading.
                        tb = _format(_type(exc), exc, exc.__traceback__.tb_next)
                    except _BaseException:
                        evalue, tb = "(unprintable)", []
                finally:
                    _sys.stdout, _sys.stderr = saved
                had_stderr = _len(err.parts) > 0  # noqa: F841 (the hook reads it)
            audit("torchclass.end", nonce)
            # What the student and the instructor read; the verdict is the signed part above.
            try:
                fd = _open(results + nonce + ".txt", _O_NEW, 0o640)
                _write(fd, _dumps({"stdout": _join(out.parts), "stderr": _join(err.parts),
                                   "evalue": evalue, "traceback": tb}).encode())
                _close(fd)
            except (_OSError, _TypeError, _ValueError):
                pass
        finally:
            if interrupt is not _None:
                _setsignal(_SIGINT, interrupt)

    collect(_func_code(_torchclass_sentinel_code[0]))  # noqa: F821 (set just below)
    holder["run"], holder["code"] = run, _func_code(run)
    holder["cells"] = _tuple((c, c.cell_contents) for c in (_func_closure(run) or ()))
    if key:
        sys.addaudithook(hook)
    sentinel = types.ModuleType("_torchclass_sentinel")
    sentinel.run = run
    sys.modules["_torchclass_sentinel"] = sentinel
    modules_seen["_torchclass_sentinel"] = sentinel


_torchclass_sentinel_code = [_torchclass_sentinel]
_torchclass_sentinel()
del _torchclass_sentinel, _torchclass_sentinel_code
