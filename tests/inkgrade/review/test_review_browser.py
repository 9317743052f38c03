"""A full keyboard grading pass through one question in headless Chromium (Debian's package, driven by
Playwright without ``playwright install``) against the real server; the store is checked afterwards."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import pytest

from inkgrade.store import ExamStore

REPO = Path(__file__).resolve().parents[3]
CHROMIUM = Path("/usr/bin/chromium")
# INKGRADE_REVIEW_SCREENSHOT=docs/review.png refreshes the README's picture of the review page.
SCREENSHOT_ENV = "INKGRADE_REVIEW_SCREENSHOT"

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason="/usr/bin/chromium not installed")


@pytest.fixture
def browser_page():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
        yield page
        browser.close()


def test_keyboard_pass_through_a_question(exam, tmp_path, browser_page, review_server):
    from playwright.sync_api import expect

    exam_dir, _ = exam
    proc, url = review_server(exam_dir, tmp_path / "run")
    screenshot = tmp_path / "review.png"
    try:
        page = browser_page
        queue = httpx.get(url + "/api/items", params={"question": "Q1"}).json()
        order = [i["student_id"] for i in queue]
        assert [i["risk"] for i in queue] == sorted((i["risk"] for i in queue), reverse=True)
        assert all(i["status"] == "unreviewed" for i in queue)
        student = page.locator("#student")
        keys = page.locator("#keys")

        page.goto(url + "/review/Q1")
        expect(student).to_have_text(f"Student {order[0]}")
        for shown in ("Enter", "zero", "full marks", "skip", "next unreviewed", "previous", "whole page"):
            expect(keys).to_contain_text(shown)
        expect(page.locator("#reason")).to_have_text(queue[0]["risk_reason"])

        page.keyboard.type("3")
        page.keyboard.press("Enter")
        expect(student).to_have_text(f"Student {order[1]}")
        page.keyboard.press("z")  # zero
        expect(student).to_have_text(f"Student {order[2]}")
        page.keyboard.type("9")  # over the maximum: refused, nothing moves
        page.keyboard.press("Enter")
        expect(page.locator("#flash")).to_contain_text("outside [0, 4]")
        expect(student).to_have_text(f"Student {order[2]}")
        page.keyboard.press("f")  # full marks
        expect(student).to_have_text(f"Student {order[3]}")
        page.keyboard.press("s")  # skip
        expect(student).to_have_text(f"Student {order[4]}")
        page.screenshot(path=str(screenshot))

        page.keyboard.press("w")  # whole page of this answer
        expect(page.locator("#page-view")).to_be_visible()
        assert page.locator("#page-image").get_attribute("src").endswith(f"pages/{order[4]}_p0.png")
        page.keyboard.press("+")
        page.keyboard.press("Escape")
        expect(page.locator("#page-view")).to_be_hidden()

        page.keyboard.type("1.5")
        page.keyboard.press("Enter")
        expect(student).to_have_text(f"Student {order[5]}")
        page.keyboard.press("p")  # previous: back to the one just graded
        expect(student).to_have_text(f"Student {order[4]}")
        expect(page.locator("#points-now")).to_have_text("1.5")
        expect(page.locator("#history")).to_contain_text("browser-test · – → 1.5 (reviewed)")
        page.keyboard.press("n")  # next unreviewed
        expect(student).to_have_text(f"Student {order[5]}")
        page.keyboard.type("2.5")
        page.keyboard.press("Enter")
        expect(student).to_have_text(f"Student {order[3]}")  # only the skipped one is left
        page.keyboard.type("2")
        page.keyboard.press("Enter")
        expect(page.locator("#flash")).to_contain_text("All answers to Q1 are reviewed")
        expect(page.locator("#progress-text")).to_have_text("6 / 6")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    # A stopped server finishes its run folder: what changed while it ran (seven saves, the refusal not among them).
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["changes"] == 7

    with ExamStore.open(exam_dir) as store:
        got = {i.student_id: (i.points, i.status) for i in store.items(question_id="Q1")}
        assert got == {order[0]: (3.0, "reviewed"), order[1]: (0.0, "reviewed"), order[2]: (4.0, "reviewed"),
                       order[3]: (2.0, "reviewed"), order[4]: (1.5, "reviewed"), order[5]: (2.5, "reviewed")}
        skipped = store.audit(f"{order[3]}-Q1")
        assert [(a["new_status"], a["who"]) for a in skipped] == [("skipped", "browser-test"),
                                                                  ("reviewed", "browser-test")]
        assert all(i.status == "unreviewed" for i in store.items(question_id="Q2"))
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(screenshot, os.environ[SCREENSHOT_ENV])


@pytest.mark.slow
def test_single_answer_page_in_the_browser(exam, tmp_path, browser_page, review_server):
    """Upload through the page's own form: the first request loads the default recogniser and grader."""
    import numpy as np
    from playwright.sync_api import expect

    from htr.synth.fonts import list_fonts
    from inkgrade.review.benchmark import render_answer

    font = next(f for f in list_fonts("heldout") if not f.uppercase_only)
    text = "Plants take in carbon dioxide and water and use sunlight absorbed by chlorophyll to make glucose."
    render_answer(text, font, np.random.default_rng(3)).save(tmp_path / "answer.png")
    _, url = review_server(exam[0], tmp_path / "run")
    page = browser_page
    page.goto(url + "/single")
    page.set_input_files("#image", str(tmp_path / "answer.png"))
    page.set_input_files("#rubric", str(REPO / "src" / "grading" / "sample_exam" / "rubric.json"))
    page.select_option("#question", "Q2")
    page.click("#grade-button")
    expect(page.locator("#result")).to_be_visible(timeout=300_000)
    expect(page.locator("#r-transcription")).to_contain_text("carbon dioxide and water")
    expect(page.locator("#r-matched")).to_contain_text("glucose is produced")
    assert float(page.locator("#r-points").inner_text()) >= 2
