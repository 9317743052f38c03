"""Wong's instructor workflow around the exam store (:mod:`inkgrade.store`).

- :mod:`~inkgrade.workflow.scans`: scanned PDFs and images in, one grey page image at a time.
- :mod:`~inkgrade.workflow.template`: the region template, its blank reference pages, which template
  page a scan is, and the booklet code printed on each page.
- :mod:`~inkgrade.workflow.ingest`: ``scripts/grade_exam.py`` (align, identify, read, grade, risk).
- :mod:`~inkgrade.workflow.risk`: how doubtful each AI grade is, and why.
- :mod:`~inkgrade.workflow.export`: ``scripts/export_results.py`` (reports, scored PDFs, samples, mail).
- :mod:`~inkgrade.workflow.demo`: the bundled sample exam printed, filled in and scanned as a PDF.
"""
