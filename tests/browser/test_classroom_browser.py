"""The classroom in a real Chromium: a student's JupyterLab with the released assignments, and
the instructor's formgrader. Screenshots go to test-artifacts/<test name>/."""

import pytest
from classroom_fixture import assignment_under_test
from conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.hub, pytest.mark.timeout(300)]


def test_student_sees_jupyterlab_with_released_assignments(classroom, browser, artifacts_dir):
    student = classroom.students[0]
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        login(page, classroom.url, student, classroom.passwords()[student])
        page.wait_for_url(f"**/user/{student}/lab**", timeout=120_000)
        page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
        page.get_by_role("menuitem", name="Nbgrader").click()
        items = page.locator(".lm-Menu-itemLabel").all_inner_texts()
        assert "Assignment List" in items
        assert not any("Formgrader" in i or "Course List" in i for i in items), items
        page.get_by_text("Assignment List", exact=True).click()
        page.wait_for_selector(f"text={assignment_under_test()}", timeout=60_000)
        page.screenshot(path=str(artifacts_dir / "student-assignments.png"))
    except Exception:
        page.screenshot(path=str(artifacts_dir / "student-failure.png"))
        raise
    finally:
        page.close()


def test_instructor_opens_the_formgrader(classroom, browser, artifacts_dir):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        login(page, classroom.url, classroom.instructor, classroom.passwords()[classroom.instructor])
        page.wait_for_url("**/user/**", timeout=120_000)
        page.goto(f"{classroom.url}services/formgrader-{classroom.course_id}/formgrader")
        page.wait_for_selector(f"text={assignment_under_test()}", timeout=60_000)
        assert "Manage Assignments" in page.content()
        page.screenshot(path=str(artifacts_dir / "instructor-formgrader.png"))
    except Exception:
        page.screenshot(path=str(artifacts_dir / "instructor-failure.png"))
        raise
    finally:
        page.close()
