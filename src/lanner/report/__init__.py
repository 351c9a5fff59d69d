"""``lanner report RUN``: one self-contained HTML file (no network, no install) describing a run."""

from lanner.report._builder import build_report, collect, render, script_json

__all__ = ["build_report", "collect", "render", "script_json"]
