"""The support lead's API: honest resolution figures (and the monthly audit); lead or admin keys."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from api.deps import AppRuntime, Credentials, Lead, lead, signed_in
from api.errors import DESK_ERRORS, error_doc
from pages import page, wants_page

router = APIRouter(tags=["lead"])

READ_ERRORS: dict[int | str, dict[str, Any]] = {
    **DESK_ERRORS,
    422: error_doc("The period is not usable (a moment that is not ISO, or as_of before since)"),
}


@router.get("/insights", responses=READ_ERRORS)
def get_insights(
    request: Request,
    runtime: AppRuntime,
    credentials: Credentials,
    since: Annotated[str | None, Query(description="First moment (ISO) of the period")] = None,
    as_of: Annotated[
        str | None, Query(description="Judge the 72-hour and time-limit rules at this moment (ISO)")
    ] = None,
) -> Any:
    """Episodes by honest outcome, containment, categories with handoff reasons, gaps, desk times, SLA breaches.

    A browser navigating here (Accept: text/html) gets the insights page, which signs in and asks again for JSON.
    """
    from app.insights import Period, parse_moment

    if wants_page(request.headers.get("accept")):
        return page("insights.html")
    lead(signed_in(request, credentials))

    insights = runtime.insights
    if insights is None:
        raise HTTPException(503, "starting")
    period = Period.of(parse_moment(since, "since"), parse_moment(as_of, "as_of"), insights.clock)
    return insights.report(period)


@router.get("/audit", responses=READ_ERRORS)
def get_audit(
    runtime: AppRuntime,
    who: Lead,
    month: Annotated[str, Query(description="The month to audit, YYYY-MM")],
    format: Annotated[str, Query(pattern="^(json|md|html)$", description="json, md or html")] = "json",
) -> Any:
    """The month's tier-boundary audit: per category volume, outcomes, handoff reasons, L2 notes, recommendation."""
    from app.audit import build_audit, to_html, to_markdown

    if runtime.insights is None:
        raise HTTPException(503, "starting")
    audit = build_audit(runtime.insights, runtime.pack, month)
    answer: Response
    if format == "html":
        answer = HTMLResponse(to_html(audit))
    elif format == "md":
        answer = PlainTextResponse(to_markdown(audit), media_type="text/markdown; charset=utf-8")
    else:
        return audit
    return answer
