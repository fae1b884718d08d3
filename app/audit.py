"""The monthly tier-boundary audit: per category, what happened, what L2 did, and what to change in policy.yaml.

policy.yaml's ``categories`` (tier 1: the bot may resolve; tier 2: it hands off) is the boundary
audited. Each category gets one recommendation with its evidence and the policy.yaml line to change;
the audit never changes the file. The rules, in the order they are tried:

- fewer than ``MIN_EPISODES`` episodes: too few to judge;
- tier 2, and at least ``TIER_DOWN_SHARE`` of its L2 resolution notes use a step of one of the
  category's runbooks: move the tier down;
- tier 1 with a reopen rate above ``REOPEN_LIMIT``: the tier is too low;
- tier 1 with more than ``HANDOFF_LIMIT`` of its episodes handed off: the knowledge base is insufficient;
- otherwise keep.
"""

from __future__ import annotations

import re
from calendar import monthrange
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

from app.insights import OUTCOMES, UNCATEGORISED, Insights, Period, PeriodRejected
from core.pack import Pack
from core.redact import redact


class AuditRejected(PeriodRejected):
    """An audit cannot be made as asked (a month that is not YYYY-MM, an output that is not .md or .html)."""


MIN_EPISODES = 10
TIER_DOWN_SHARE = 0.8
HANDOFF_LIMIT = 0.3
REOPEN_LIMIT = 0.1
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_WORD = re.compile(r"[a-z0-9]{4,}")
# A note "uses" a step when it names the runbook, or holds this share of the step's longer words.
_STEP_OVERLAP = 0.5


def month_period(month: str, now: datetime, window_hours: int) -> Period:
    """Episodes opened in ``YYYY-MM``, judged once the recontact window after its end has passed (or now)."""
    found = _MONTH.match(month)
    if not found:
        raise AuditRejected(f"--month {month!r} is not a month; write it as YYYY-MM, e.g. 2026-11")
    year, number = int(found.group(1)), int(found.group(2))
    start = datetime(year, number, 1, tzinfo=UTC)
    end = start + timedelta(days=monthrange(year, number)[1])
    if start > now:
        raise AuditRejected(f"--month {month} has not begun yet; audit a month that has")
    return Period(
        since=start, as_of=min(now, end + timedelta(hours=window_hours)), until=end - timedelta(microseconds=1)
    )


@dataclass(frozen=True)
class PolicyLine:
    """Where a category's tier is (or would go) in policy.yaml."""

    path: str
    line: int
    text: str
    present: bool


def policy_line(pack: Pack, category: str) -> PolicyLine:
    """The line of policy.yaml that sets ``category``'s tier, or the ``categories:`` line to add it under."""
    path = pack.root / "policy.yaml"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    section = next((i for i, text in enumerate(lines) if text.startswith("categories:")), None)
    if section is not None:
        for i in range(section + 1, len(lines)):
            text = lines[i]
            if text and not text.startswith((" ", "#")):
                break
            if re.match(rf"^\s+{re.escape(category)}\s*:", text):
                return PolicyLine(str(path), i + 1, text.strip(), True)
    return PolicyLine(str(path), (section or 0) + 1, "categories:", False)


def _uses_a_step(note: str, runbook_ids: set[str], steps: list[str]) -> bool:
    lowered = note.lower()
    if any(rid in lowered for rid in runbook_ids):
        return True
    said = set(_WORD.findall(lowered))
    for step in steps:
        words = set(_WORD.findall(step.lower()))
        if words and len(words & said) / len(words) >= _STEP_OVERLAP:
            return True
    return False


def _recommend(pack: Pack, entry: dict[str, Any], notes: list[dict[str, Any]]) -> dict[str, Any]:
    category = entry["category"]
    if category == UNCATEGORISED:
        # No runbook fitted these: no tier to move, runbooks to write (the gaps in insights name them).
        text = (
            f"write runbooks: {entry['episodes']} episodes fitted no runbook and {entry['handed_off']} were handed"
            " off; the knowledge gaps of `tierone insights` group them"
        )
        return {"action": "knowledge", "text": text, "tier": None}
    policy = pack.policy.categories.get(category)
    tier = policy.tier if policy else 1
    where = policy_line(pack, category)
    at = f"{Path(where.path).name} line {where.line}"
    change_to = 1 if tier == 2 else 2
    edit = (
        f"change `{where.text}` to `{category}: {{tier: {change_to}}}` ({at})"
        if where.present
        else f"add `  {category}: {{tier: {change_to}}}` under `categories:` ({at})"
    )
    runbooks = [rb for rb in pack.runbooks.values() if rb.meta.category == category]
    steps = [step.text for rb in runbooks for step in rb.steps]
    using = sum(_uses_a_step(n["note"] or "", {rb.meta.id for rb in runbooks}, steps) for n in notes)
    episodes, handed, reopened = entry["episodes"], entry["handed_off"], entry["reopened"]
    if episodes < MIN_EPISODES:
        return {"action": "too_few", "text": f"too few episodes to judge ({episodes} < {MIN_EPISODES})", "tier": tier}
    if tier == 2 and notes and using / len(notes) >= TIER_DOWN_SHARE:
        text = (
            f"move tier down: {using} of {len(notes)} L2 resolutions ({using / len(notes):.0%}) used a runbook step"
            f" the bot has; {edit}"
        )
        return {"action": "tier_down", "text": text, "tier": tier, "line": vars(where)}
    if tier == 1 and entry["reopen_rate"] > REOPEN_LIMIT:
        text = (
            f"tier too low: reopen rate {entry['reopen_rate']:.0%} ({reopened} of {episodes} episodes) is above"
            f" {REOPEN_LIMIT:.0%}; {edit}"
        )
        return {"action": "tier_up", "text": text, "tier": tier, "line": vars(where)}
    if tier == 1 and entry["handoff_rate"] > HANDOFF_LIMIT:
        top = ", ".join(f"{code} {n}" for code, n in list(entry["reasons"].items())[:3])
        text = (
            f"knowledge base insufficient: {entry['handoff_rate']:.0%} of tier-1 episodes ({handed} of {episodes})"
            f" were handed off, more than {HANDOFF_LIMIT:.0%} (reasons: {top}); improve the runbooks of this"
            f" category, or if they cannot be, {edit}"
        )
        return {"action": "knowledge", "text": text, "tier": tier, "line": vars(where)}
    return {"action": "keep", "text": f"keep tier {tier}: no rule of the audit fired", "tier": tier}


def build_audit(insights: Insights, pack: Pack, month: str) -> dict[str, Any]:
    """The month's audit as one object: period, totals, and per category figures, L2 notes and a recommendation."""
    period = month_period(month, insights.clock(), pack.policy.recontact.window_hours)
    report = insights.report(period)
    notes = insights.resolution_notes(period)
    categories = []
    for entry in report["categories"]:
        mine = [n for n in notes if n["category"] == entry["category"]]
        categories.append(
            {
                **{k: entry[k] for k in ("category", "episodes", *OUTCOMES, "handoff_rate", "reopen_rate")},
                "containment_rate": entry["containment_rate"],
                "reasons": entry["reasons"],
                "l2_notes": [
                    {
                        "runbook_id": n["runbook_id"],
                        "reason": n["reason"],
                        "note": redact(n["note"] or ""),
                        "at": n["at"],
                    }
                    for n in mine
                ],
                "recommendation": _recommend(pack, entry, mine),
            }
        )
    return {
        "month": month,
        "since": report["since"],
        "until": period.until.isoformat() if period.until else None,
        "judged_at": report["as_of"],
        "totals": {k: report[k] for k in ("episodes", *OUTCOMES, "containment_rate")},
        "categories": categories,
    }


def to_markdown(audit: dict[str, Any]) -> str:
    """The audit as Markdown: a summary table, then one section per category."""
    t = audit["totals"]
    out = [
        f"# Tier-boundary audit, {audit['month']}",
        "",
        f"Episodes opened {audit['since'][:10]} to {audit['until'][:10]}, judged at {audit['judged_at'][:16]} UTC"
        " (after the 72-hour recontact window where the month allows).",
        f"{t['episodes']} episodes; containment {t['containment_rate']:.1%} ="
        " (confirmed + no_recontact) / (episodes - pending - in_progress).",
        "",
        "| category | episodes | confirmed | no recontact | reopened | abandoned | handed off | reopen rate |"
        " recommendation |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in audit["categories"]:
        out.append(
            f"| {c['category']} | {c['episodes']} | {c['confirmed']} | {c['no_recontact']} | {c['reopened']} |"
            f" {c['abandoned']} | {c['handed_off']} | {c['reopen_rate']:.0%} | {c['recommendation']['action']} |"
        )
    for c in audit["categories"]:
        out += ["", f"## {c['category']}", "", f"**Recommendation:** {c['recommendation']['text']}", ""]
        outcomes = ", ".join(f"{k} {c[k]}" for k in OUTCOMES if c[k])
        out.append(f"- Volume: {c['episodes']} episodes ({outcomes or 'none'})")
        out.append(f"- Reopen rate: {c['reopen_rate']:.1%}; handoff rate: {c['handoff_rate']:.1%}")
        reasons = ", ".join(f"`{code}` {n}" for code, n in c["reasons"].items())
        out.append(f"- Handoffs by reason: {reasons or 'none'}")
        if c["l2_notes"]:
            out += ["", "What L2 wrote when they resolved these handoffs:", ""]
            out += [
                f"- {n['at'][:10]} ({n['runbook_id'] or 'no runbook'}): {n['note'] or '(no note)'}"
                for n in c["l2_notes"]
            ]
    out += ["", "The audit changes nothing by itself: each recommendation names the policy.yaml line to edit.", ""]
    return "\n".join(out)


_STYLE = """body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1d2733}
table{border-collapse:collapse;width:100%;font-size:14px}th,td{border-bottom:1px solid #d8dee6;padding:.35rem .5rem;
text-align:left}td:nth-child(n+2):not(:last-child){text-align:right}h1{font-size:1.6rem}h2{margin-top:2rem;
border-top:2px solid #e6ebf0;padding-top:1rem}code{background:#f1f4f7;padding:0 .25rem;border-radius:3px}"""


def to_html(audit: dict[str, Any]) -> str:
    """The audit as one self-contained HTML page (the Markdown, rendered; no scripts, no outside files)."""
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(to_markdown(audit))
    title = escape(f"Tier-boundary audit, {audit['month']}")
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_STYLE}</style></head><body>\n{body}</body></html>\n"
    )


def write_audit(audit: dict[str, Any], out: Path) -> None:
    """Write the audit as Markdown (.md) or HTML (.html), chosen by the file's suffix."""
    if out.suffix.lower() not in (".md", ".html"):
        raise AuditRejected(f"--out {out} must end in .md or .html")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_markdown(audit) if out.suffix.lower() == ".md" else to_html(audit), encoding="utf-8")
