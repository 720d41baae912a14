"""The reproduction report: claims of the paper checked on saved results, rendered as Markdown."""

from mirrorattn.report.build import build_report, collect_claims

__all__ = ["build_report", "collect_claims"]
