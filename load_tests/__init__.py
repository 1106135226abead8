"""Load tests and the benchmark harness (Locust runs as a subprocess, never imported here)."""
