"""Locust load shapes, added to a run with ``-f load_tests/locustfile.py,<shape>.py``."""
