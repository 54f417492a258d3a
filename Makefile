# calmq developer commands. `make chaos` runs the full fault, load and bad-input suite
# (tests/chaos, about 15 minutes on two cores, needs root for tmpfs and network namespaces)
# and prints the results table that docs/reliability.md quotes. A failing scenario does not
# stop the run: its row says FAIL and pytest's summary above the table says why.

PYTHON ?= .venv/bin/python
BASETEMP ?= /tmp/calmq-chaos
RESULTS ?= bench/chaos/results.jsonl

.PHONY: chaos chaos-short

chaos:
	rm -f $(RESULTS)
	date -u
	-CHAOS_RESULTS=$(abspath $(RESULTS)) $(PYTHON) -m pytest tests/chaos -m chaos \
		-p no:cacheprovider --basetemp=$(BASETEMP) -q -rA --timeout=900
	-CHAOS_RESULTS=$(abspath $(RESULTS)) CHAOS_PROPERTY_EXAMPLES=1000 $(PYTHON) -m pytest \
		tests/chaos/test_bad_input.py tests/chaos/test_store_properties.py \
		-p no:cacheprovider --basetemp=$(BASETEMP) -q -rA
	$(PYTHON) bench/chaos/table.py $(RESULTS)

chaos-short:
	$(PYTHON) -m pytest tests/chaos -p no:cacheprovider --basetemp=$(BASETEMP) -q
