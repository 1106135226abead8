"""Offline reports over served rows (``tabserve drift-report``); built on the core."""
