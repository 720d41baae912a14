"""Build ``report.md`` and ``report.json`` in a results folder, from the saved results only.

The folder is the one ``mirrorattn reproduce`` writes: ``synthetic/<experiment>/``,
``text/<dataset>/`` and ``vision/<dataset>/``, each with its JSON summaries and PNG figures,
plus ``reproduce.json`` (what ran, what was skipped and why). Nothing is trained here:
``mirrorattn report DIR`` redraws the report from disk.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Callable

from mirrorattn.io import atomic_path, read_json, write_json
from mirrorattn.report.claims_base import NOT_RUN, VERDICTS, Claim

ClaimFn = Callable[[Path], Claim]


def claim_functions() -> tuple[ClaimFn, ...]:
    """Every claim checked by the report, in the order the report shows them."""
    from mirrorattn.report.real_claims import REAL_DATA_CLAIMS
    from mirrorattn.report.synthetic_claims import SYNTHETIC_CLAIMS

    return (*SYNTHETIC_CLAIMS, *REAL_DATA_CLAIMS)


def collect_claims(root: str | Path) -> list[Claim]:
    """Evaluate every claim on the results saved under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {root} does not exist; run `mirrorattn reproduce --out {root}` first")
    return [fn(root) for fn in claim_functions()]


def _skips(root: Path) -> dict[str, str]:
    path = root / "reproduce.json"
    if not path.is_file():
        return {}
    steps = read_json(path, expect=dict).get("steps", {}).items()
    return {k: f"{v['status']}: {v.get('reason', '')}" for k, v in steps if v.get("status") in ("skipped", "failed")}


def render_markdown(claims: list[Claim], root: Path, meta: dict[str, Any] | None = None) -> str:
    """The report as Markdown: a verdict table, then one section per claim."""
    meta = meta or {}
    lines = ["# mirrorattn: reproduction report", ""]
    lines.append("Paper: Julistiono, Tarzanagh, Azizan, *Optimizing Attention with Mirror Descent: Generalized "
                 "Max-Margin Token Selection*, arXiv 2410.14581.")
    if meta.get("preset"):
        lines.append(f"Preset: `{meta['preset']}`; generated {meta.get('generated', '')} from the results in this "
                     "folder (`mirrorattn report DIR` redraws it without training).")
    lines.append("")
    counts = {v: sum(c.verdict == v for c in claims) for v in VERDICTS}
    lines.append("## Verdicts")
    lines.append("")
    lines.append(", ".join(f"{n} {v}" for v, n in counts.items()) + ".")
    lines.append("")
    lines.append("| claim | verdict |")
    lines.append("|---|---|")
    for c in claims:
        lines.append(f"| [{c.title}](#{c.key}) | **{c.verdict}** |")
    lines.append("")
    for c in claims:
        lines.append(f'<a id="{c.key}"></a>')
        lines.append(f"## {c.title}")
        lines.append("")
        lines.append(f"**Verdict: {c.verdict}.** Rule: {c.rule}")
        lines.append("")
        lines.append(f"*The paper:* {c.paper}")
        lines.append("")
        if c.verdict == NOT_RUN:
            lines.append(f"Not run: {c.note or 'no results in this folder.'}")
            lines.append("")
            continue
        if c.note:
            lines.append(c.note)
            lines.append("")
        lines.extend(c.body)
        lines.append("")
        for f in c.figures:
            lines.append(f"![{Path(f).stem}]({f})")
            lines.append("")
    from mirrorattn.report.real_claims import short_training_sections

    lines += short_training_sections(root)
    skips = _skips(root)
    if skips:
        lines.append("## Experiments skipped or failed")
        lines.append("")
        for step, reason in skips.items():
            lines.append(f"- `{step}`: {reason}")
        lines.append("")
    return "\n".join(lines)


def build_report(root: str | Path) -> Path:
    """Write ``root/report.md`` and ``root/report.json`` from the saved results; return the .md path."""
    root = Path(root)
    claims = collect_claims(root)
    meta: dict[str, Any] = {"generated": _dt.datetime.now().isoformat(timespec="seconds")}
    if (root / "reproduce.json").is_file():
        meta["preset"] = read_json(root / "reproduce.json", expect=dict).get("preset")
    text = render_markdown(claims, root, meta)
    path = root / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    write_json(root / "report.json", {"meta": meta, "claims": [c.as_dict() for c in claims],
                                      "verdicts": {c.key: c.verdict for c in claims}})
    return path


__all__ = ["build_report", "claim_functions", "collect_claims", "render_markdown"]
