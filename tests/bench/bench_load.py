"""Load generator for a classroom (`make bench-load`): N students arrive at a given rate and each
does what a student does at a deadline, over HTTP only, the way the browser does it:

    login        GET /hub/login, POST the form (the hub's cookie)
    spawn        GET /hub/spawn, then the progress event stream until ready (a 429 "please
                 wait" page is retried when it says: a wait, not a failure)
    lab          GET /user/<u>/lab (the OAuth hand-off into the student's server)
    assignments  GET /user/<u>/assignments?course_id=... (nbgrader's assignment list API)
    fetch        POST /user/<u>/assignments/fetch
    execute      POST /user/<u>/api/kernels, run one cell through the kernel's websocket
    submit       POST /user/<u>/assignments/submit

then leaves its server idle (the kernel stays, as when a student leaves the tab open).

    # a throw-away classroom on this machine (root: real Unix accounts), 50, 100, 200 at 2/s
    python tests/bench/bench_load.py --students 50,100,200 --rate 2 --out bench-results/
    python tests/bench/bench_load.py --quick --out /tmp/x          # 3 students, a smoke test
    # any hub (e.g. one deployed on Kubernetes): a roster file of "user password" lines
    python tests/bench/bench_load.py --url https://hub.example.edu/ --roster pw.txt \
        --course-id torch101 --students 50 --rate 2 --allow-remote --out bench-results/

Writes load.json, load.md and load.png into --out. Everything is bounded: at most --students
students, each given --student-timeout seconds, the whole run --max-duration seconds; arrivals stop
when the machine's available memory falls below --min-free-mb (the run is then reported as cut
short, with the reason). Without --allow-remote only loopback addresses are driven.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import os
import platform
import re
import shutil
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit

import aiohttp
import yarl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "hub"))

STEPS = ["login", "spawn", "lab", "assignments", "fetch", "execute", "submit"]
HARD_MAX_STUDENTS = 400  # a typo in --students must not create thousands of accounts
DEFAULT_CELL = "import sys\nprint(sum(range(10**5)), sys.version_info[:2])"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50_s": round(pct(values, 0.5), 3),
            "p95_s": round(pct(values, 0.95), 3), "max_s": round(max(values), 3)}


class _HoldBack:
    """Set when the machine runs short of memory: no new arrivals, and students waiting in the
    hub's queue stop retrying (the hub's own limit assumes the machine is the class's alone)."""

    def __init__(self):
        self.why = ""

    def set(self, why: str):
        self.why = why

    def is_set(self) -> bool:
        return bool(self.why)


HOLD_BACK = _HoldBack()


class StepFailed(Exception):
    def __init__(self, step: str, reason: str):
        super().__init__(f"{step}: {reason}")
        self.step, self.reason = step, reason


class Student:
    """One simulated student: its own cookie jar, so nothing is shared with the others."""

    def __init__(self, base: str, user: str, password: str, course_id: str, cell: str,
                 timeout: float):
        self.base = base.rstrip("/") + "/"
        self.user, self.password, self.course_id, self.cell = user, password, course_id, cell
        self.deadline = time.monotonic() + timeout
        self.steps: dict[str, float] = {}
        self.waits: list[dict] = []  # each polite "please wait" (429) the hub answered
        self.record: dict = {"user": user}

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise StepFailed(self._step, "the student's time budget ran out")
        return left

    def _xsrf(self, s: aiohttp.ClientSession, url: str) -> dict:
        morsel = s.cookie_jar.filter_cookies(yarl.URL(url)).get("_xsrf")
        return {"X-XSRFToken": morsel.value} if morsel else {}

    def _url(self, path: str) -> str:
        return f"{self.base}user/{quote(self.user)}/{path}"

    async def _json(self, r: aiohttp.ClientResponse, step: str):
        if r.status >= 400:
            raise StepFailed(step, f"HTTP {r.status}: {(await r.text())[:300]}")
        data = await r.json(content_type=None)
        if isinstance(data, dict) and data.get("success") is False:
            raise StepFailed(step, str(data.get("value"))[:300])
        return data

    async def run(self, t_zero: float) -> dict:
        self.record["arrived_s"] = round(time.monotonic() - t_zero, 3)
        jar = aiohttp.CookieJar(unsafe=True)  # unsafe: cookies for an IP address like 127.0.0.1
        self._step = "login"
        t_login = time.monotonic()
        try:
            async with aiohttp.ClientSession(cookie_jar=jar) as s:
                for step in STEPS:
                    self._step = step
                    t0 = time.monotonic()
                    await asyncio.wait_for(getattr(self, f"_{step}")(s), self._left())
                    self.steps[step] = round(time.monotonic() - t0, 3)
                    if step == "lab":
                        # What the student waits for: from pressing "Sign in" to JupyterLab.
                        self.record["login_to_ready_s"] = round(time.monotonic() - t_login, 3)
                self.record["ok"] = True
        except StepFailed as e:
            self.record.update(ok=False, failed_step=e.step, reason=e.reason)
        except TimeoutError:
            self.record.update(ok=False, failed_step=self._step,
                               reason="timed out (the student's time budget ran out)")
        except (aiohttp.ClientError, OSError, ValueError) as e:
            self.record.update(ok=False, failed_step=self._step,
                               reason=f"{type(e).__name__}: {e}"[:300])
        if (not self.record["ok"] and self.record["failed_step"] == "spawn" and self.waits
                and (self.waits[-1]["message"].startswith("All ")
                     or "Active user limit" in self.waits[-1]["message"])):
            # Never admitted: every wait was the "classroom is full" page. Not a failed start.
            self.record["turned_away"] = True
        if self.record.get("reason", "").startswith("held back by the generator"):
            self.record["turned_away"] = True  # the generator's choice, not the hub's failure
        self.record["steps"] = self.steps
        self.record["waits"] = self.waits
        self.record["done_s"] = round(time.monotonic() - t_zero, 3)
        return self.record

    async def _login(self, s):
        async with s.get(self.base + "hub/login") as r:
            if r.status != 200:
                raise StepFailed("login", f"login page: HTTP {r.status}")
        xsrf = s.cookie_jar.filter_cookies(yarl.URL(self.base + "hub/")).get("_xsrf")
        form = {"username": self.user, "password": self.password,
                "_xsrf": xsrf.value if xsrf else ""}
        async with s.post(self.base + "hub/login?next=", data=form, allow_redirects=False) as r:
            if r.status != 302:
                raise StepFailed("login", f"HTTP {r.status} (wrong password or roster?)")

    async def _spawn(self, s):
        api = f"{self.base}hub/api/users/{quote(self.user)}"
        t0 = time.monotonic()
        while True:
            # What the browser does after the login form's redirect: GET /hub/spawn. A full
            # hub answers 429 with a page that says why and when it retries by itself.
            async with s.get(self.base + "hub/spawn", allow_redirects=False) as r:
                body = await r.text()
                if r.status == 429 and HOLD_BACK.is_set():
                    raise StepFailed("spawn", "held back by the generator: " + HOLD_BACK.why)
                if r.status == 429:
                    refresh = re.search(r'http-equiv="refresh" content="(\d+)"', body)
                    retry = float(refresh[1] if refresh else r.headers.get("Retry-After") or 10)
                    self.waits.append({"after_s": round(time.monotonic() - t0, 1),
                                       "retry_after_s": retry, "message": _message(body),
                                       "page_retries_itself": bool(refresh)})
                    await asyncio.sleep(min(retry, max(self._left() - 1, 0)))
                    continue
                if r.status not in (200, 302, 303):
                    raise StepFailed("spawn", f"HTTP {r.status}: {_message(body)}")
                break
        # The spawn-pending page listens to this event stream; so does the generator.
        async with s.get(api + "/server/progress", headers=self._xsrf(s, api),
                         timeout=aiohttp.ClientTimeout(total=self._left())) as r:
            if r.status != 200:
                raise StepFailed("spawn", f"progress stream: HTTP {r.status}")
            last = ""
            async for raw in r.content:
                line = raw.decode(errors="replace").strip()
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                last = event.get("message", last)
                if event.get("failed"):
                    raise StepFailed("spawn", last or "the server failed to start")
                if event.get("ready"):
                    return
        async with s.get(api, headers=self._xsrf(s, api)) as r:
            info = await self._json(r, "spawn")
        if not (info.get("servers", {}).get("", {}) or {}).get("ready"):
            raise StepFailed("spawn", f"progress ended without a ready server ({last})")

    async def _lab(self, s):
        async with s.get(self._url("lab")) as r:  # follows the OAuth redirects
            if r.status != 200:
                raise StepFailed("lab", f"HTTP {r.status}")
            await r.read()
        async with s.get(self._url("api/status")) as r:
            await self._json(r, "lab")

    async def _assignments(self, s):
        async with s.get(self._url(f"assignments?course_id={quote(self.course_id)}")) as r:
            data = await self._json(r, "assignments")
        released = [a["assignment_id"] for a in data["value"] if a.get("status") == "released"]
        if not released:
            raise StepFailed("assignments", f"no released assignment in {data['value']}")
        self.assignment = released[0]

    async def _action(self, s, action: str):
        url = self._url(f"assignments/{action}")
        form = {"course_id": self.course_id, "assignment_id": self.assignment}
        async with s.post(url, data=form, headers=self._xsrf(s, url)) as r:
            return await self._json(r, action)

    async def _fetch(self, s):
        await self._action(s, "fetch")

    async def _submit(self, s):
        value = (await self._action(s, "submit"))["value"]
        if "submitted" not in [a.get("status") for a in value]:
            raise StepFailed("submit", f"no submitted status in {str(value)[:200]}")

    async def _execute(self, s):
        url = self._url("api/kernels")
        async with s.post(url, data=json.dumps({"name": "python3"}),
                          headers={**self._xsrf(s, url), "Content-Type": "application/json"}) as r:
            kernel = await self._json(r, "execute")
        session = uuid.uuid4().hex
        ws_url = self._url(f"api/kernels/{kernel['id']}/channels?session_id={session}")
        ws_url = "ws" + ws_url[4:] if ws_url.startswith("http") else ws_url
        msg_id = uuid.uuid4().hex
        request = {
            "header": {"msg_id": msg_id, "username": self.user, "session": session,
                       "msg_type": "execute_request", "version": "5.3",
                       "date": dt.datetime.now(dt.UTC).isoformat()},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": self.cell, "silent": False, "store_history": True,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        }
        async with s.ws_connect(ws_url, headers=self._xsrf(s, url)) as ws:
            await ws.send_str(json.dumps(request))
            output, status = [], None
            async for m in ws:
                if m.type != aiohttp.WSMsgType.TEXT:
                    continue
                msg = json.loads(m.data)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["header"]["msg_type"]
                if kind == "stream":
                    output.append(msg["content"]["text"])
                elif kind == "error":
                    raise StepFailed("execute", f"{msg['content']['ename']}: "
                                     f"{msg['content']['evalue']}")
                elif kind == "execute_reply":
                    status = msg["content"]["status"]
                if status and kind == "status" and msg["content"]["execution_state"] == "idle":
                    break
                if status and output:
                    break
            if status != "ok":
                raise StepFailed("execute", f"execute_reply status {status!r}")
        self.record["cell_output"] = "".join(output).strip()[:200]


def _message(body: str) -> str:
    """The human sentence of a hub error page or API error, for the report."""
    try:
        return json.loads(body).get("message", body)[:300]
    except ValueError:
        m = (re.search(r'id="torchclass-wait">(.*?)</p>', body, re.DOTALL)
             or re.search(r'<div class="error">.*?<p>(.*?)</p>', body, re.DOTALL))
        return " ".join((m.group(1) if m else body[:200]).split())[:300]


class Sampler(threading.Thread):
    """Hub, proxy and students' servers (with their kernels): CPU and RSS every second, from psutil
    (local runs only; against a remote hub the generator counts its own students' servers)."""

    def __init__(self, hub_pid: int | None, users: set[str], interval: float = 1.0):
        super().__init__(daemon=True)
        self.hub_pid, self.users, self.interval = hub_pid, users, interval
        self.samples: list[dict] = []
        self.stop_event = threading.Event()
        self.t_zero = time.monotonic()
        self.mem_available_mb = float("inf")

    def run(self):
        import psutil

        tracked: dict[int, psutil.Process] = {}
        while not self.stop_event.is_set():
            row = {"t_s": round(time.monotonic() - self.t_zero, 1), "load1": os.getloadavg()[0]}
            vm = psutil.virtual_memory()
            self.mem_available_mb = vm.available / 2**20
            row["mem_available_mb"] = round(self.mem_available_mb)
            if self.hub_pid:
                servers, server_rss, kernels = 0, 0, 0
                try:
                    hub = psutil.Process(self.hub_pid)
                    parts = {"hub": [hub], "proxy": [p for p in hub.children()
                                                      if "http-proxy" in " ".join(p.cmdline())]}
                except psutil.Error:
                    parts = {}
                for name, procs in parts.items():
                    rss = cpu = 0.0
                    for p in procs:
                        p = tracked.setdefault(p.pid, p)  # keep the object: cpu_percent is a delta
                        with contextlib.suppress(psutil.Error):
                            rss += p.memory_info().rss
                            cpu += p.cpu_percent(None)
                    row[f"{name}_rss_mb"], row[f"{name}_cpu_pct"] = round(rss / 2**20, 1), cpu
                for p in psutil.process_iter(["username", "cmdline", "memory_info"]):
                    if p.info["username"] not in self.users or not p.info["memory_info"]:
                        continue
                    cmd = " ".join(p.info["cmdline"] or [])
                    servers += "jupyterhub-singleuser" in cmd
                    kernels += "ipykernel" in cmd
                    server_rss += p.info["memory_info"].rss
                row.update(servers=servers, kernels=kernels,
                           servers_rss_mb=round(server_rss / 2**20))
            self.samples.append(row)
            self.stop_event.wait(self.interval)


async def drive(base: str, roster: list[tuple[str, str]], course_id: str, rate: float,
                cell: str, student_timeout: float, max_duration: float,
                sampler: Sampler | None, min_free_mb: float) -> dict:
    t_zero = time.monotonic()
    tasks, cut_short = [], None
    HOLD_BACK.set("")

    async def watch_memory():
        while sampler and not HOLD_BACK.is_set():
            if sampler.mem_available_mb < min_free_mb:
                HOLD_BACK.set(f"available memory fell to {sampler.mem_available_mb:.0f} MiB "
                              f"(< --min-free-mb {min_free_mb:.0f})")
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch_memory())
    live = {"servers": 0}

    async def one(user, password):
        rec = await Student(base, user, password, course_id, cell, student_timeout).run(t_zero)
        if "lab" in rec["steps"]:
            live["servers"] += 1
        return rec

    for i, (user, password) in enumerate(roster):
        if time.monotonic() - t_zero > max_duration:
            cut_short = f"--max-duration {max_duration:.0f} s reached after {i} arrivals"
            break
        if HOLD_BACK.is_set():
            cut_short = f"{HOLD_BACK.why}, after {i} arrivals"
            break
        tasks.append(asyncio.create_task(one(user, password)))
        if rate > 0:
            await asyncio.sleep(max(0.0, t_zero + (i + 1) / rate - time.monotonic()))
    left = max(1.0, max_duration - (time.monotonic() - t_zero))
    done, pending = await asyncio.wait(tasks, timeout=left) if tasks else (set(), set())
    for t in pending:
        t.cancel()
    watcher.cancel()
    records = [t.result() for t in tasks if t in done]
    records += [{"user": "?", "ok": False, "failed_step": "?", "reason": "cancelled at "
                 "--max-duration", "steps": {}, "waits": []} for _ in pending]
    if pending:
        cut_short = cut_short or f"--max-duration {max_duration:.0f} s: {len(pending)} unfinished"
    cut_short = cut_short or (f"{HOLD_BACK.why} while students waited" if HOLD_BACK.is_set()
                              else None)
    return {"records": records, "cut_short": cut_short,
            "duration_s": round(time.monotonic() - t_zero, 1)}


def report_run(n: int, rate: float, result: dict, samples: list[dict], load_before) -> dict:
    records = result["records"]
    failed = [r for r in records if not r.get("ok")]
    run = {
        "students": n, "rate_per_s": rate, "arrived": len(records),
        "duration_s": result["duration_s"], "cut_short": result["cut_short"],
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "login_to_ready": summary([r["login_to_ready_s"] for r in records
                                   if "login_to_ready_s" in r]),
        "steps": {s: summary([r["steps"][s] for r in records if s in r["steps"]])
                  for s in STEPS},
        "failed": len([r for r in failed if not r.get("turned_away")]),
        # "classroom is full", or held back in the queue by the generator's memory guard
        "turned_away_full": len([r for r in failed if r.get("turned_away")]),
        "failed_spawns": [{"user": r["user"], "reason": r["reason"]} for r in failed
                          if r.get("failed_step") in ("spawn", "login")
                          and not r.get("turned_away")],
        "other_failures": [{"user": r["user"], "step": r.get("failed_step"),
                            "reason": r["reason"]} for r in failed
                           if r.get("failed_step") not in ("spawn", "login")],
        "students_asked_to_wait": sum(1 for r in records if r["waits"]),
        "wait_messages": sorted({w["message"] for r in records for w in r["waits"]}),
        "per_student": records,
        "samples": samples,
    }
    if samples:
        run["load1_max"] = max(s["load1"] for s in samples)
        run["load1_mean"] = round(sum(s["load1"] for s in samples) / len(samples), 2)
        run["mem_available_min_mb"] = min(s["mem_available_mb"] for s in samples)
        for key in ("hub_rss_mb", "proxy_rss_mb", "servers", "servers_rss_mb", "kernels"):
            vals = [s[key] for s in samples if key in s]
            if vals:
                run[f"peak_{key}"] = max(vals)
        cpu = [s["hub_cpu_pct"] for s in samples if "hub_cpu_pct" in s]
        if cpu:
            run["hub_cpu_pct_mean"] = round(sum(cpu) / len(cpu), 1)
        # RSS counts the shared libraries once per process; what the machine gives up is
        # the fall in available memory from before the first arrival to the fullest moment.
        run["class_memory_mb"] = samples[0]["mem_available_mb"] - run["mem_available_min_mb"]
        if run.get("peak_servers"):
            run["memory_per_server_mb"] = round(run["class_memory_mb"] / run["peak_servers"], 1)
            run["rss_per_server_with_kernel_mb"] = round(
                run["peak_servers_rss_mb"] / run["peak_servers"], 1)
    return run


def _cpu(p, children: bool = False) -> float:
    t = p.cpu_times()
    return t.user + t.system + ((t.children_user + t.children_system) if children else 0)


def cpu_seconds(room, hub_before: float) -> dict:
    """CPU the class cost, independent of how busy the machine was: the students' servers and
    kernels (all of their lives), and the hub since the first arrival plus its proxy."""
    import psutil

    students = set(room.students)
    procs = [p for p in psutil.process_iter(["username"]) if p.info["username"] in students]
    spent = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            spent += _cpu(p, children=True)
    hub = psutil.Process(room.hub_pid())
    hub_spent = _cpu(hub) - hub_before
    for child in hub.children():  # the students' servers are the hub's children too
        with contextlib.suppress(psutil.Error):
            if "http-proxy" in " ".join(child.cmdline()):
                hub_spent += _cpu(child)
    n = max(1, len(room.students))
    return {"students_processes_s": round(spent, 1), "per_student_s": round(spent / n, 2),
            "hub_and_proxy_s": round(hub_spent, 1), "hub_per_student_s": round(hub_spent / n, 2)}


def hub_limits(room) -> dict:
    """The limits the hub was started with (read back from the classroom's settings)."""
    from torchclass_hub import hubconfig

    settings = getattr(hubconfig, "capacity_settings", None)
    return settings(room.classroom) if settings else {}


def run_local(ns: list[int], rate: float, args) -> list[dict]:
    import psutil
    from classroom_fixture import TestClassroom

    runs = []
    for n in ns:
        print(f"== {n} students at {rate}/s: preparing a classroom ({n} Unix accounts)...",
              flush=True)
        room = TestClassroom(n_students=n, extra_settings=args.classroom_settings)
        sampler = None
        try:
            room.up()
            passwords = room.passwords()
            roster = [(u, passwords[u]) for u in room.students]
            hub_cpu_before = _cpu(psutil.Process(room.hub_pid()))
            sampler = Sampler(room.hub_pid(), set(room.students))
            sampler.start()
            time.sleep(2)  # a baseline before the first arrival
            load_before = os.getloadavg()
            result = asyncio.run(drive(room.url, roster, room.course_id, rate, args.cell,
                                       args.student_timeout, args.max_duration, sampler,
                                       args.min_free_mb))
            time.sleep(3)  # the idle class, after the last cell
            cpu = cpu_seconds(room, hub_cpu_before)
            sampler.stop_event.set()
            sampler.join()
            run = report_run(n, rate, result, sampler.samples, load_before)
            run["cpu_seconds"] = cpu
            run["hub_limits"] = hub_limits(room)
            run["hub_log_spawn_errors"] = spawn_errors_from_log(room)
            # The hub log goes with the results: teardown removes the classroom's data dir.
            args.out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(room.classroom.state_dir / "jupyterhub.log",
                            args.out / f"load-hub-{n}.log")
            runs.append(run)
            print_run(run)
            save(args.out, {**args.results, "runs": runs})  # a later size may not finish
        finally:
            if sampler:
                sampler.stop_event.set()
            # `down` (SIGTERM) has the hub stop every server at once, then the accounts go.
            room.teardown()
    return runs


def spawn_errors_from_log(room) -> list[str]:
    log = room.classroom.state_dir / "jupyterhub.log"
    try:
        lines = log.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    keys = ("Unhandled error starting", "failed to start", "Timeout", "Failed to start")
    return [ln[:300] for ln in lines if any(k in ln for k in keys)][:50]


def run_remote(ns: list[int], rate: float, args) -> list[dict]:
    roster = []
    for line in Path(args.roster).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            user, password = line.split(None, 1)
            roster.append((user, password.strip()))
    runs = []
    for n in ns:
        if n > len(roster):
            raise SystemExit(f"error: --students {n} but {args.roster} lists {len(roster)}")
        load_before = os.getloadavg()
        result = asyncio.run(drive(args.url, roster[:n], args.course_id, rate, args.cell,
                                   args.student_timeout, args.max_duration, None, 0))
        run = report_run(n, rate, result, [], load_before)
        runs.append(run)
        print_run(run)
        if len(ns) > 1:
            print("note: against a remote hub the servers are not stopped between runs; "
                  "stop them (or use a fresh roster slice) before the next size.")
    return runs


def save(out: Path, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "load.json").write_text(json.dumps(results, indent=1))


def print_run(run: dict) -> None:
    r = run["login_to_ready"]
    print(f"   {run['students']} students: login->ready p50 {r.get('p50_s')} p95 {r.get('p95_s')}"
          f" max {r.get('max_s')} s; failed {run['failed']}; asked to wait "
          f"{run['students_asked_to_wait']}; load1 max {run.get('load1_max')}", flush=True)


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return all(ipaddress.ip_address(a[4][0]).is_loopback
                   for a in socket.getaddrinfo(host, None))
    except (OSError, ValueError):
        return False


def write_markdown(out: Path, results: dict) -> str:
    m = results["machine"]
    lines = ["# Load benchmark: students arriving at a deadline", "",
             (f"{m['cpus']} CPUs, {m['mem_total_gib']} GiB, shared with other work: load averages "
             "are given per run (numbers on a busy machine are noisy)."), "",
             ("| students | rate/s | login→ready p50 / p95 / max (s) | failed | asked to wait | "
              "turned away (full) | "
             "peak servers | hub RSS peak (MiB) | proxy RSS peak | servers+kernels RSS peak "
             "(MiB) | per server RSS / memory used (MiB) | load1 mean / max |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        lr = r["login_to_ready"]
        lines.append(
            f"| {r['students']} | {r['rate_per_s'] or 'all at once'} | "
            f"{lr.get('p50_s')} / {lr.get('p95_s')} / {lr.get('max_s')} | {r['failed']} | "
            f"{r['students_asked_to_wait']} | {r.get('turned_away_full', 0)} | "
            f"{r.get('peak_servers', '-')} | "
            f"{r.get('peak_hub_rss_mb', '-')} | {r.get('peak_proxy_rss_mb', '-')} | "
            f"{r.get('peak_servers_rss_mb', '-')} | {r.get('rss_per_server_with_kernel_mb', '-')} / "
            f"{r.get('memory_per_server_mb', '-')}"
            f" | {r.get('load1_mean', '-')} / {r.get('load1_max', '-')} |")
    lines += ["", "Per step (p50 / p95 / max, seconds):", "",
              "| students | " + " | ".join(STEPS) + " |", "|---|" + "---|" * len(STEPS)]
    for r in results["runs"]:
        cells = []
        for s in STEPS:
            st = r["steps"][s]
            cells.append(f"{st['p50_s']} / {st['p95_s']} / {st['max_s']}" if st["n"] else "-")
        lines.append(f"| {r['students']} | " + " | ".join(cells) + " |")
    for r in results["runs"]:
        if r["cut_short"]:
            lines.append(f"\n{r['students']} students: cut short: {r['cut_short']}")
        for f in r["failed_spawns"] + r["other_failures"]:
            lines.append(f"- {r['students']} students: {f['user']} failed "
                         f"({f.get('step', 'spawn')}): {f['reason']}")
        for msg in r["wait_messages"]:
            lines.append(f"- {r['students']} students: asked to wait: \"{msg}\"")
    text = "\n".join(lines) + "\n"
    (out / "load.md").write_text(text)
    return text


def plot(out: Path, runs: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 3.2 * len(runs)), squeeze=False)
    for ax, r in zip(axes[:, 0], runs):
        ok = [p for p in r["per_student"] if "login_to_ready_s" in p]
        ax.scatter([p["arrived_s"] for p in ok], [p["login_to_ready_s"] for p in ok], s=10,
                   label="login → ready (s), by arrival time")
        bad = [p for p in r["per_student"] if not p.get("ok") and "arrived_s" in p]
        if bad:
            ax.scatter([p["arrived_s"] for p in bad], [0] * len(bad), marker="x", color="red",
                       label="failed")
        ax.set_xlabel("time since first arrival (s)")
        ax.set_ylabel("seconds")
        ax.set_title(f"{r['students']} students at {r['rate_per_s'] or 'once'}/s")
        if r["samples"] and "servers" in r["samples"][0]:
            ax2 = ax.twinx()
            t0 = 2.0  # the sampler starts 2 s before the first arrival
            ax2.plot([s["t_s"] - t0 for s in r["samples"]], [s["servers"] for s in r["samples"]],
                     color="tab:orange", label="servers running")
            ax2.set_ylabel("servers running")
            ax2.legend(loc="lower right", fontsize=8)
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "load.png", dpi=90)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--students", default="50,100,200",
                   help="class sizes to run, one after another (default 50,100,200)")
    p.add_argument("--rate", type=float, default=2.0,
                   help="arrivals per second; 0 = all at once (default 2)")
    p.add_argument("--quick", action="store_true", help="3 students, a smoke test")
    p.add_argument("--out", type=Path, default=Path("bench-results"))
    p.add_argument("--url", help="drive this hub instead of a throw-away local classroom")
    p.add_argument("--roster", help="with --url: file of 'user password' lines")
    p.add_argument("--course-id", help="with --url: the nbgrader course id")
    p.add_argument("--allow-remote", action="store_true",
                   help="permit a --url that is not a loopback address")
    p.add_argument("--cell", default=DEFAULT_CELL, help="the code each student runs")
    p.add_argument("--student-timeout", type=float, default=600,
                   help="seconds one student may take for all steps (default 600)")
    p.add_argument("--max-duration", type=float, default=1200,
                   help="seconds one run may take in all (default 1200)")
    p.add_argument("--min-free-mb", type=float, default=2048,
                   help="stop arrivals when available memory falls below this (default 2048)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="classroom-file setting for the local classroom, e.g. "
                        "--set 'limits={\"concurrent_spawns\": 0}' (repeatable)")
    args = p.parse_args(argv)
    ns = [3] if args.quick else [int(x) for x in args.students.split(",") if x.strip()]
    if any(n < 1 or n > HARD_MAX_STUDENTS for n in ns):
        p.error(f"--students: each size must be 1..{HARD_MAX_STUDENTS}")
    if args.rate < 0:
        p.error("--rate must be >= 0")
    args.classroom_settings = {}
    for item in args.set:
        key, _, value = item.partition("=")
        args.classroom_settings[key] = json.loads(value)
    if args.url:
        if not (args.roster and args.course_id):
            p.error("--url needs --roster and --course-id")
        if not args.allow_remote and not is_loopback(args.url):
            p.error(f"{args.url} is not a loopback address: pass --allow-remote to load it")
    elif os.geteuid() != 0:
        print("error: bench_load.py without --url starts a classroom with real Unix accounts "
              "and needs root (or point it at a running hub: --url, --roster, --course-id)",
              file=sys.stderr)
        return 2
    import psutil

    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "mem_total_gib": round(psutil.virtual_memory().total / 2**30, 1),
                           "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]},
               "target": args.url or "local throw-away classroom", "cell": args.cell,
               "started_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    args.results = results
    results["runs"] = run_remote(ns, args.rate, args) if args.url else run_local(ns, args.rate,
                                                                                 args)
    save(args.out, results)
    print(write_markdown(args.out, results))
    plot(args.out, results["runs"])
    print(f"Results in {args.out}/load.{{json,md,png}}")
    return 0 if all(r["failed"] == 0 and not r["cut_short"] for r in results["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
