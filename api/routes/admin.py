"""The admins' API: technicians' API keys, and erasures of customers' data."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Admin, AppRuntime, Keys
from api.errors import DESK_ERRORS, error_doc
from api.routes.conversations import announce_erasure
from api.schemas import ErasureOut, ErasureRequest, KeyOut, NewKey
from app.erasure import Eraser
from core import logs

router = APIRouter(tags=["admin"])


@router.get("/admin/keys", responses=DESK_ERRORS)
def list_keys(keys: Keys, who: Admin) -> list[KeyOut]:
    """Every API key's record (never the keys)."""
    return [KeyOut(**vars(k)) for k in keys.list()]


@router.post("/admin/keys", status_code=201, responses=DESK_ERRORS)
def create_key(keys: Keys, body: NewKey, who: Admin) -> KeyOut:
    """Make an API key; the response is the only time it is shown."""
    key = keys.create(body.name, body.role)
    record = next(k for k in reversed(keys.list()) if k.prefix == key[:9] and k.name == body.name.strip())
    logs.log("key created", actor=who.name, name=body.name, role=body.role)
    return KeyOut(**vars(record), key=key)


@router.delete("/admin/keys/{name}", responses={**DESK_ERRORS, 422: error_doc("No live key")})
def revoke_key(keys: Keys, name: str, who: Admin) -> dict[str, int]:
    """Revoke every live key of a technician."""
    revoked = keys.revoke(name)
    logs.log("key revoked", actor=who.name, name=name)
    return {"revoked": revoked}


@router.post(
    "/admin/erasures",
    responses={
        **DESK_ERRORS,
        404: error_doc("No such conversation"),
        422: error_doc("Neither or both of email and conversation_id, or not an address"),
    },
)
def erase_customer(runtime: AppRuntime, body: ErasureRequest, who: Admin) -> ErasureOut:
    """Erase a customer by address (every conversation that gave it or acted on its account), or a conversation."""
    eraser = Eraser(runtime.erasure)
    actor = f"admin:{who.name}"
    if body.email is not None:
        report = eraser.forget(email=body.email.strip(), actor=actor)
    else:
        report = eraser.forget(conversation_id=body.conversation_id, actor=actor)
    return announce_erasure(runtime, report)


@router.get("/admin/erasures", responses=DESK_ERRORS)
def list_erasures(runtime: AppRuntime, who: Admin) -> list[ErasureOut]:
    """Every erasure so far, oldest first (ids, who asked, counts; no personal data)."""
    return [ErasureOut.model_validate(r) for r in Eraser(runtime.erasure).history()]
