"""Psychometric analysis of AI grades against human grades (Cvengros & Kortemeyer, sections 3.3-3.5 and 4).

``io`` reads and validates the long-format grade tables, ``reliability`` treats repeated AI runs as
raters, ``quality`` compares AI with human points and sweeps the partial-credit threshold, ``irt`` fits
the 2PL behind the risk filter, ``tables`` and ``figures`` lay the results out as the paper does, and
``analyze.run`` ties them together for ``scripts/analyze_grades.py``.
"""
