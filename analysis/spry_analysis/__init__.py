"""spry_analysis: read spry run files (docs/runfile.md), tabulate sweeps, compare methods, check THEORY.md's
statements, plot, and write a report. Command line: analysis/spry-analyze VERB ... (docs/analysis.md).

Modules: runfile (THE reader), tangents (Python reference of the tangent generator), table (tidy tables),
stats (confidence intervals), plots (curves), compare (method pairs), theory (E1-E8), report (HTML), cli.
"""
__all__ = ["runfile", "tangents", "table", "stats", "plots", "compare", "theory", "report", "cli"]
