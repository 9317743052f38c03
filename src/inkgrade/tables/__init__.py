"""Letter-coded answer tables with two-pass validation (Grabowski & Canz).

``layout`` reads and checks the layout and key files, ``grid`` finds each printed table on a scan and
cuts its cells, ``identity`` matches a read student ID to the roster, ``grade`` runs the whole
``scripts/grade_tables.py`` job (two passes, outputs, review queue), ``synth`` renders filled-in table
pages for tests and the evaluation in ``experiments/answer_tables``.
"""
