"""A stand-in for a mobile operator's REST API, to run packs/mobile by hand against real HTTP.

    python bench/mobile_backend.py --port 8099 --token dev-token     # serves until Ctrl-C

then, in another shell:

    export TIERONE_MOBILE_API_URL=http://127.0.0.1:8099 TIERONE_MOBILE_API_TOKEN=dev-token
    tierone chat --runbooks packs/mobile

It serves every tool of packs/mobile/tools.yaml, on the embedded directory's customers (acc-1001
Jane Doe ... acc-1005 Maria Garcia), in memory: lines, top-ups, roaming, payment requests, line
resumes and texted codes (printed, not sent). Changes honour the Idempotency-Key header: a repeat
gets the first answer. A wrong bearer token gets 401, an unknown line 404. ``--fail TOOL=STATUS``
makes one tool answer that status, to watch a conversation hand off with ``tool_failed``.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Request

LINES: dict[str, dict[str, Any]] = {
    "acc-1001": {"phone": "+44 7700 900101", "date_of_birth": "1988-02-14", "plan": "Unlimited Calls 10 GB"},
    "acc-1002": {"phone": "+44 7700 900102", "date_of_birth": "1975-11-30", "plan": "Unlimited Calls 5 GB"},
    "acc-1003": {"phone": "+44 7700 900103", "date_of_birth": "1992-07-01", "plan": "Unlimited Everything"},
    "acc-1004": {"phone": "+44 7700 900104", "date_of_birth": "1990-04-03", "plan": "SIM only 20 GB"},
    "acc-1005": {"phone": "+44 7700 900105", "date_of_birth": "1983-09-09", "plan": "Unlimited Calls 10 GB"},
}


def create_backend(token: str, fail: dict[str, int] | None = None) -> FastAPI:
    """The stand-in API, with fresh in-memory lines."""
    app = FastAPI(title="Mobile operator stand-in")
    lines = {
        account_id: {**line, "account_id": account_id, "status": "active", "data_left_gb": 0.0, "roaming": "off"}
        for account_id, line in LINES.items()
    }
    lines["acc-1005"]["status"] = "suspended"
    seen: dict[str, Any] = {}
    failing = fail or {}

    def authorised(authorization: str = Header("")) -> None:
        if authorization != f"Bearer {token}":
            raise HTTPException(401, "missing or wrong bearer token")

    def line(account_id: str) -> dict[str, Any]:
        if account_id not in lines:
            raise HTTPException(404, "no such line")
        return lines[account_id]

    def once(tool: str, request: Request, act: Any) -> Any:
        if tool in failing:
            raise HTTPException(failing[tool], f"{tool} is failing on purpose (--fail)")
        key = request.headers.get("Idempotency-Key")
        if key and key in seen:
            return seen[key]
        result = act()
        if key:
            seen[key] = result
        return result

    guard = [Depends(authorised)]

    @app.get("/lines/by-phone/{phone}", dependencies=guard)
    def by_phone(phone: str) -> dict[str, Any]:
        digits = re.sub(r"\D", "", phone)[-9:]
        for found in lines.values():
            if re.sub(r"\D", "", found["phone"]).endswith(digits):
                return found
        raise HTTPException(404, "no such line")

    @app.get("/lines/{account_id}", dependencies=guard)
    def lookup(account_id: str, request: Request) -> Any:
        return once("lookup_line", request, lambda: {k: v for k, v in line(account_id).items() if k != "date_of_birth"})

    @app.get("/network/status", dependencies=guard)
    def network(request: Request, area: str = "national") -> Any:
        return once("network_status", request, lambda: {"summary": f"no known faults ({area})", "faults": []})

    @app.post("/lines/{account_id}/roaming", dependencies=guard)
    def roaming(account_id: str, body: dict[str, Any], request: Request) -> Any:
        def act() -> dict[str, Any]:
            line(account_id)["roaming"] = body.get("zone", "eu")
            return {"zone": line(account_id)["roaming"], "daily_price": "EUR 0.00 (roam like at home)"}

        return once("enable_roaming", request, act)

    @app.post("/lines/{account_id}/top-ups", dependencies=guard)
    def top_up(account_id: str, body: dict[str, Any], request: Request) -> Any:
        def act() -> dict[str, Any]:
            gb = int(body.get("gb", 1))
            line(account_id)["data_left_gb"] += gb
            return {"gb": gb, "price": f"EUR {5 * gb}.00", "data_left_gb": line(account_id)["data_left_gb"]}

        return once("top_up_data", request, act)

    @app.post("/lines/{account_id}/payment-requests", dependencies=guard)
    def payment(account_id: str, request: Request) -> Any:
        return once("send_payment_request", request, lambda: {"amount_due": "EUR 24.99", "sent": True})

    @app.post("/lines/{account_id}/resume", dependencies=guard)
    def resume(account_id: str, request: Request) -> Any:
        def act() -> dict[str, Any]:
            line(account_id)["status"] = "active"
            return {"status": "active"}

        return once("resume_line", request, act)

    @app.post("/sms", dependencies=guard)
    def sms(body: dict[str, Any], request: Request) -> Any:
        def act() -> dict[str, Any]:
            print(f"SMS to {body.get('phone')}: your code is {body.get('code')}", flush=True)
            return {"queued": True}

        return once("send_sms", request, act)

    return app


def main() -> None:
    """Serve the stand-in on loopback until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--token", default="dev-token")
    parser.add_argument("--fail", action="append", default=[], metavar="TOOL=STATUS")
    args = parser.parse_args()
    fail = {name: int(status) for name, status in (item.split("=", 1) for item in args.fail)}
    uvicorn.run(create_backend(args.token, fail), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
