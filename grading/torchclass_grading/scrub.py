"""What a student wrote, made safe to show: no hidden test in it, no script in it.

The graded copy of every notebook (the one the formgrader, the report and feedback are made
from) passes through here when the engine records it:
- `Redactor` cuts the source's hidden-test lines out of any text (a tampered kernel can print a
  test cell's source, a traceback quotes the failing line);
- `sanitize_notebook` leaves only inert HTML in outputs and markdown: no <script>, no event
  handlers, no javascript: links, no SVG (it can carry scripts), no JavaScript outputs, and images
  only as data: URLs (an <img src="/hub/api/..."> would make the instructor's browser call the
  hub as the instructor).
"""

from __future__ import annotations

import re
from pathlib import Path

import bleach
import nbformat

SHORTEST_SECRET = 6  # shorter hidden lines (`pass`, `)`) give nothing away
TAGS = {"a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "div", "dl", "dt", "em", "h1",
        "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "kbd", "li", "ol", "p", "pre", "s", "span",
        "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul"}
SAFE_LINK = re.compile(r"^(https?:|mailto:|#)", re.IGNORECASE)
ACTIVE = ("application/javascript", "text/javascript", "image/svg+xml",
          "application/vnd.jupyter.widget-view+json", "application/vnd.jupyter.widget-state+json")
HTMLISH = ("text/html", "text/markdown")


def _attribute(tag: str, name: str, value: str) -> bool:
    if name in ("title", "alt", "colspan", "rowspan", "align"):
        return True
    if tag == "a" and name == "href":
        return bool(SAFE_LINK.match(value.strip()))
    if tag == "img" and name == "src":
        return value.strip().lower().startswith("data:image/") and "svg" not in value[:40].lower()
    return False


def clean_html(text: str) -> str:
    return bleach.clean(text, tags=TAGS, attributes=_attribute,
                        protocols={"http", "https", "mailto", "data"}, strip=True,
                        strip_comments=True)


def _joined(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def sanitize_notebook(nb) -> int:
    """Make every output and markdown cell of nb inert, in place; how many things were changed."""
    changed = 0
    for cell in nb.cells:
        if cell.cell_type == "markdown" and "<" in cell.source:
            clean = clean_html(cell.source)
            changed += clean != cell.source
            cell.source = clean
        for name in list(cell.get("attachments", {}) or {}):
            for mime in list(cell.attachments[name]):
                if mime in ACTIVE:
                    del cell.attachments[name][mime]
                    changed += 1
        for out in cell.get("outputs", []):
            data = out.get("data")
            if not isinstance(data, dict):
                continue
            for mime in list(data):
                if mime in ACTIVE or mime.endswith("+javascript"):
                    del data[mime]
                    changed += 1
                elif mime in HTMLISH:
                    text = _joined(data[mime])
                    clean = clean_html(text)
                    changed += clean != text
                    data[mime] = clean
            if not data:
                data["text/plain"] = "[output removed: active content]"
    return changed


class Redactor:
    """Cuts the source's hidden-test lines out of any text that quotes them."""

    def __init__(self, notebooks: list[Path] | list):
        # Here, not at the top: this module also ships to the Kubernetes grading pods
        # (k8s_job.RUNNER_FILES), whose runner never redacts and need not import nbgrader.
        from torchclass_exchange import HIDDEN_TESTS_DELIMITERS as hidden

        secrets = set()
        for nb in notebooks:
            if isinstance(nb, (str, Path)):
                nb = nbformat.read(nb, as_version=4)
            for cell in nb.cells:
                inside = False
                for line in cell.source.splitlines():
                    text = line.strip()
                    # Where nbgrader's ClearHiddenTests looks for them: anywhere in the line.
                    if hidden[0] in text:
                        inside = True
                    elif hidden[1] in text:
                        inside = False
                    elif inside and len(text) >= SHORTEST_SECRET:
                        secrets.add(text)
        self.secrets = sorted(secrets, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "[hidden test]")
        return text

    def notebook(self, nb) -> None:
        """Redact every output of nb in place (streams, errors, results, displays)."""
        if not self.secrets:
            return
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                if "text" in out:
                    out["text"] = self(_joined(out["text"]))
                if "evalue" in out:
                    out["evalue"] = self(str(out["evalue"]))
                if isinstance(out.get("traceback"), list):
                    out["traceback"] = [self(str(t)) for t in out["traceback"]]
                data = out.get("data")
                if isinstance(data, dict):
                    for mime, value in data.items():
                        if (mime.startswith("text/") or mime == "application/json") \
                                and isinstance(value, (str, list)):
                            data[mime] = self(_joined(value))
