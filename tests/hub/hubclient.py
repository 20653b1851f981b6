"""A small HTTP client that uses the classroom the way a browser does: the hub's login form,
cookies, XSRF tokens, OAuth redirects into the user's server. Shared by the hub tests and the
hub benchmark."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import requests


class HubClient:
    def __init__(self, base_url: str, username: str):
        self.base = base_url.rstrip("/") + "/"
        self.user = username
        self.s = requests.Session()

    def _xsrf(self, path: str) -> dict:
        """XSRF header for cookie-authenticated POSTs (the hub and servers each set a cookie)."""
        token = None
        for cookie in self.s.cookies:
            if cookie.name == "_xsrf" and path.startswith(cookie.path.rstrip("/") or "/"):
                token = cookie.value
        return {"X-XSRFToken": token} if token else {}

    def login(self, password: str) -> requests.Response:
        self.s.get(self.base + "hub/login", timeout=30)
        return self.s.post(self.base + "hub/login?next=",
                           data={"username": self.user, "password": password,
                                 "_xsrf": self.s.cookies.get("_xsrf", path="/hub/")},
                           timeout=60, allow_redirects=False)

    def logged_in(self) -> bool:
        r = self.s.get(self.base + "hub/api/user", timeout=30,
                       headers=self._xsrf("/hub/"))
        return r.status_code == 200 and r.json().get("name") == self.user

    def api(self, method: str, path: str, **kw) -> requests.Response:
        headers = {**self._xsrf("/hub/"), "Content-Type": "application/json"}
        return self.s.request(method, self.base + "hub/api/" + path, timeout=60,
                              headers=headers, **kw)

    def start_server(self, timeout: float = 120) -> float:
        """Ask for the server and wait until it answers through the proxy; seconds taken."""
        t0 = time.monotonic()
        r = self.api("POST", f"users/{quote(self.user)}/server")
        if r.status_code not in (201, 202, 400):  # 400: already running
            raise RuntimeError(f"start {self.user}: {r.status_code} {r.text}")
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            info = self.api("GET", f"users/{quote(self.user)}").json()
            server = info.get("servers", {}).get("", {})
            if server.get("ready"):
                break
            if not info.get("pending") and not server:
                raise RuntimeError(f"server of {self.user} failed to start: {info}")
            time.sleep(0.2)
        else:
            raise TimeoutError(f"server of {self.user} not ready in {timeout} s")
        # Through the proxy, including the OAuth hand-off that gives us the server's cookie.
        r = self.s.get(self.server_url("lab"), timeout=60)
        r.raise_for_status()
        r = self.s.get(self.server_url("api/status"), timeout=60)
        r.raise_for_status()
        return time.monotonic() - t0

    def stop_server(self) -> None:
        self.api("DELETE", f"users/{quote(self.user)}/server")

    def server_url(self, path: str = "") -> str:
        return f"{self.base}user/{quote(self.user)}/{path}"

    def server(self, method: str, path: str, **kw) -> requests.Response:
        headers = self._xsrf(f"/user/{self.user}/")
        return self.s.request(method, self.server_url(path), headers=headers, timeout=120, **kw)

    # nbgrader's student API (the Assignments tab uses the same endpoints)
    def assignments(self, course_id: str) -> list[dict]:
        r = self.server("GET", f"assignments?course_id={course_id}")
        r.raise_for_status()
        data = r.json()
        if not data.get("success", True):
            raise RuntimeError(data)
        return data["value"]

    def assignment_action(self, action: str, course_id: str, assignment_id: str) -> dict:
        r = self.server("POST", f"assignments/{action}",
                        data={"course_id": course_id, "assignment_id": assignment_id})
        r.raise_for_status()
        data = r.json()
        if not data.get("success", True):
            raise RuntimeError(f"{action} {assignment_id}: {data}")
        return data

    def put_notebook(self, path: str, nb: dict) -> None:
        r = self.server("PUT", f"api/contents/{path}",
                        data=json.dumps({"type": "notebook", "content": nb}))
        r.raise_for_status()

    def get_file(self, path: str) -> requests.Response:
        return self.server("GET", f"api/contents/{path}")
