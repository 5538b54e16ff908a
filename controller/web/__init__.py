"""The master's read-only status and results page, its JSON API and Prometheus metrics (controller/web/service.py),
and the text form of the same status for `pycam status` (controller/web/text.py)."""
