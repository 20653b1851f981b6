"""The grading report in a real Chromium: it renders offline, draws the right histogram, and a
student's error message that carries markup stays text. Screenshot in test-artifacts/."""

import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "grading"))

from report_course import INJECTED, graded_course
from torchclass_grading import report

pytestmark = [pytest.mark.browser, pytest.mark.grading, pytest.mark.timeout(600)]


def test_report_renders_in_chromium(browser, tmp_path_factory, artifacts_dir):
    from nbgrader.api import Gradebook

    info = graded_course(tmp_path_factory)
    _, html_path = report.write_report(info["course"], info["aid"], artifacts_dir)
    with Gradebook(f"sqlite:///{Path(info['course']) / 'gradebook.db'}") as gb:
        totals = Counter(int(s.score) for s in gb.assignment_submissions(info["aid"]))
    context = browser.new_context(viewport={"width": 1200, "height": 900}, offline=True)
    page = context.new_page()
    problems, dialogs = [], []
    page.on("console", lambda m: m.type in ("error", "warning") and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        page.goto(html_path.as_uri())
        assert page.title() == f"{info['aid']}: grading report"
        bars = page.locator("svg#histogram rect.bar")
        assert bars.count() == 4  # 0..3 points
        counts = [int(bars.nth(i).get_attribute("data-count")) for i in range(4)]
        assert counts == [totals[i] for i in range(4)]
        tallest = max(range(4), key=counts.__getitem__)
        assert bars.nth(tallest).bounding_box()["height"] > 50  # drawn, not just in the markup
        assert page.locator("tr.cell-row").first.get_attribute("class") == "cell-row hardest"
        # the injected markup is shown as text, and nothing in it ran
        messages = page.locator("#failures td.msg").all_inner_texts()
        assert f"ValueError: {INJECTED}" in messages, messages
        assert page.locator("#failures img, script").count() == 0
        assert dialogs == [] and problems == [], (dialogs, problems)
        page.screenshot(path=str(artifacts_dir / "grading-report.png"), full_page=True)
    except Exception:
        page.screenshot(path=str(artifacts_dir / "grading-report-failure.png"), full_page=True)
        raise
    finally:
        context.close()
