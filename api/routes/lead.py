"""The support lead's API: honest resolution figures (and the monthly audit); lead or admin keys."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from api.deps import AppRuntime, Lead
from api.errors import DESK_ERRORS, error_doc

router = APIRouter(tags=["lead"])

READ_ERRORS: dict[int | str, dict[str, Any]] = {
    **DESK_ERRORS,
    422: error_doc("The period is not usable (a moment that is not ISO, or as_of before since)"),
}


@router.get("/insights", responses=READ_ERRORS)
def get_insights(
    runtime: AppRuntime,
    who: Lead,
    since: Annotated[str | None, Query(description="First moment (ISO) of the period")] = None,
    as_of: Annotated[
        str | None, Query(description="Judge the 72-hour and time-limit rules at this moment (ISO)")
    ] = None,
) -> dict[str, Any]:
    """Episodes by honest outcome, containment, categories with handoff reasons, gaps, desk times, SLA breaches."""
    from app.insights import Period, parse_moment

    insights = runtime.insights
    if insights is None:
        raise HTTPException(503, "starting")
    period = Period.of(parse_moment(since, "since"), parse_moment(as_of, "as_of"), insights.clock)
    return insights.report(period)
