"""The bundled sample exam as a teacher would get it back from the scanner (``scripts/make_sample_scans.py``).

Each student's answers are written by hand (synthetic handwriting, one hand per script) into the
printed exam (:mod:`htr.synth.pages`); every page also carries the student's booklet code
(:class:`~inkgrade.workflow.template.PageCode`), then is scanned (rotation, shift, scale, shading,
noise, blur, JPEG). All pages are shuffled into one PDF (``scans.pdf``), or one shuffled PDF per
student (``scans/<booklet>.pdf``). Written next to it: ``template.json`` (Wong regions),
``blank.pdf`` (the unfilled exam, the alignment reference), ``roster.csv`` (with an ``email``
column) and ``truth.jsonl`` (which student and template page each PDF page really is; the workflow
never reads it, the measurement does).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from PIL import Image
from tqdm import tqdm

from grading.roster import load_roster
from grading.rubric import load_answers, load_rubric
from htr.synth.fonts import list_fonts
from htr.synth.lines import AugmentConfig
from htr.synth.pages import (
    ExamLayout,
    PageConfig,
    QuestionBox,
    ScanConfig,
    layout_exam,
    render_blank,
    render_exam,
    scan_page,
)
from inkbase.errors import InputError, config_dataclass
from inkbase.jsonio import write_json
from inkbase.runs import hydra_output_dir, start_run
from inkgrade.workflow.template import PageCode

log = logging.getLogger(__name__)


def render_script(layout: ExamLayout, student: dict[str, str], answers: dict[str, str], font, rng: np.random.Generator,
                  scan: ScanConfig, augment: AugmentConfig, booklet: int | None, code: PageCode) -> list[Image.Image]:
    """One student's filled-in, coded and scanned pages."""
    clean = render_exam(layout, student, answers, font, rng, ScanConfig.none(), augment)
    pages = []
    for page in clean.pages:
        arr = np.array(page)
        if booklet is not None:
            code.draw(arr, booklet)
        scanned, _ = scan_page(arr.astype(np.float32), rng, scan)
        pages.append(Image.fromarray(scanned, mode="L"))
    return pages


def save_pdf(path: Path, pages: list[Image.Image], dpi: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pages[0].save(path, save_all=True, append_images=pages[1:], resolution=dpi)


def _same_config(out: Path, cfg: DictConfig) -> bool:
    import yaml
    from omegaconf import OmegaConf

    old = yaml.safe_load((out / "config.yaml").read_text()) if (out / "config.yaml").is_file() else None
    return old == OmegaConf.to_container(cfg, resolve=True)


def make_sample_scans(cfg: DictConfig) -> dict[str, Any]:
    out = hydra_output_dir(cfg.out_dir)
    if (out / "metrics.json").is_file() and _same_config(out, cfg):
        log.info("%s already holds these scans", out)
        return json.loads((out / "metrics.json").read_text())
    folder = start_run(out, cfg)
    rubric = load_rubric(cfg.rubric)
    roster = load_roster(cfg.roster)
    answers = load_answers(cfg.answers, rubric)
    by_student: dict[str, dict[str, str]] = {}
    for a in answers:
        by_student.setdefault(str(a.extra.get("student_id")), {})[a.question_id] = a.text
    students = [s for s in roster if s.student_id in by_student][:cfg.max_students]
    layout = layout_exam(rubric.exam_id, [QuestionBox(q.id, q.text, q.max_points) for q in rubric.questions],
                         config_dataclass(PageConfig, cfg.page, "page"))
    code = config_dataclass(PageCode, cfg.page_code, "page_code")
    scan = config_dataclass(ScanConfig, cfg.scan, "scan")
    augment = AugmentConfig.from_dict(cfg.augment)
    fonts = [f for f in list_fonts(cfg.fonts) if not f.uppercase_only]
    if not fonts:
        raise InputError("fonts", cfg.fonts, "no mixed-case handwriting font is installed")

    write_json(folder.file("template.json"), layout.template())
    save_pdf(folder.file("blank.pdf"), [Image.fromarray(render_blank(layout, k)) for k in range(len(layout.pages))],
             cfg.dpi)
    with folder.file("roster.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["student_id", "name", "class", "email"])
        for s in roster:
            writer.writerow([s.student_id, s.name, s.class_, f"{s.student_id.lower()}@{cfg.email_domain}"])

    pages: list[tuple[Image.Image, dict[str, Any]]] = []
    for index, s in enumerate(tqdm(students, desc="render", unit="script")):
        rng = np.random.default_rng([int(cfg.seed), index])  # per script: the same hand on a rerun
        font = fonts[int(rng.integers(len(fonts)))]
        booklet = index + 1
        scripts = render_script(layout, {"name": s.name, "id": s.student_id, "class": s.class_},
                                by_student[s.student_id], font, rng, scan, augment, booklet, code)
        for k, page in enumerate(scripts):
            pages.append((page, {"student_id": s.student_id, "template_page": str(k), "booklet": booklet,
                                 "font": font.name}))
    order = np.random.default_rng(int(cfg.seed)).permutation(len(pages))
    truth = []
    if cfg.per_student:
        for s_index, s in enumerate(students):
            mine = [i for i in order if pages[i][1]["student_id"] == s.student_id]
            name = f"scans/{s_index + 1:03d}.pdf"
            save_pdf(folder.file(name), [pages[i][0] for i in mine], cfg.dpi)
            truth += [{"file": name, "page": k + 1, **pages[i][1]} for k, i in enumerate(mine)]
    else:
        save_pdf(folder.file("scans.pdf"), [pages[i][0] for i in order], cfg.dpi)
        truth = [{"file": "scans.pdf", "page": k + 1, **pages[i][1]} for k, i in enumerate(order)]
    with folder.file("truth.jsonl").open("w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(t) + "\n" for t in truth)
    metrics = {"n_students": len(students), "n_pages": len(truth), "pages_per_script": len(layout.pages),
               "per_student": bool(cfg.per_student)}
    folder.finish(metrics)
    log.info("rendered %d pages of %d students -> %s", len(truth), len(students), folder.path)
    return metrics
