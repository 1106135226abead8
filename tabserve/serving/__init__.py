"""Serving: the only layer that imports BentoML. Start-up, metrics, the monitor, logs,
tracing and the inference log; every private BentoML API in one guarded module.
"""
