# The two commands of the README. Both set up .venv first (scripts/setup.sh; idempotent).
.PHONY: smoke test setup
VENV_STAMP := .venv/.setup-done

$(VENV_STAMP): pyproject.toml scripts/setup.sh
	scripts/setup.sh
	touch $(VENV_STAMP)

setup: $(VENV_STAMP)

smoke: $(VENV_STAMP)
	. .venv/bin/activate && snakemake --cores 2 reproduce_all

test: $(VENV_STAMP)
	scripts/test.sh
