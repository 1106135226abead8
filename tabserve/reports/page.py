"""The frame of a report page: one self-contained HTML file with the reports' styles."""

from __future__ import annotations

import html

_STYLE = """\
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; }
table { border-collapse: collapse; margin: 1rem 0; }
td, th { padding: .3rem .8rem; border-bottom: 1px solid #e2e8f0; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
"""


def report_page(title: str, heading: str, body: str) -> str:
    """A whole page: ``title`` in the tab, ``heading`` (text, escaped here) as its
    ``<h1>``, then ``body`` (HTML)."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
{_STYLE}</style></head><body>
<h1>{html.escape(heading)}</h1>
{body}
</body></html>
"""
