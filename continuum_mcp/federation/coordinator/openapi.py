"""The coordinator's OpenAPI 3.1 document, generated from ``protocol.routes()`` and the error taxonomy.

Why generated: the route table is the one wire contract; the HTTP app and this document are both
built from it, so they cannot disagree (a test compares the served document with this function).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from continuum_mcp import __version__
from continuum_mcp.crypto.identity import (
    HEADER_INSTANCE,
    HEADER_NONCE,
    HEADER_PUBLIC_KEY,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    HEADER_VERSION,
)
from continuum_mcp.errors import ERRORS_BY_CODE
from continuum_mcp.federation.governance import PROPOSAL_ID_PATTERN
from continuum_mcp.federation.protocol import ADMIN_TOKEN_HEADER, ERRORS, SECAGG_PHASES, ErrorBody, FederationInfo, routes

AUTH_HEADERS = (HEADER_VERSION, HEADER_INSTANCE, HEADER_PUBLIC_KEY, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)

_PATH_PARAMS: dict[str, dict[str, Any]] = {
    "round_id": {"type": "integer", "minimum": 0},
    "kind": {"type": "string", "enum": list(SECAGG_PHASES)},
    "pattern_id": {"type": "string", "pattern": "^p-[0-9]+$"},
    "proposal_id": {"type": "string", "pattern": PROPOSAL_ID_PATTERN},
}


def _codes_by_status() -> dict[int, str]:
    """HTTP status -> the wire codes answered with it (from the error classes)."""
    out: dict[int, list[str]] = {}
    for code in ERRORS:
        cls = ERRORS_BY_CODE.get(code)
        out.setdefault(cls.http_status if cls is not None else ERRORS[code], []).append(code)
    return {status: " / ".join(codes) for status, codes in out.items()}


def _error_statuses(auth: str, name: str) -> list[int]:
    statuses = [400, 413, 429]
    if auth != "none":
        statuses += [401, 403, 404, 409]
    if name in ("query", "download"):
        statuses.append(402)
    return statuses


def openapi_document(info: FederationInfo | None = None) -> dict[str, Any]:
    """OpenAPI 3.1 document of every route of the protocol."""
    components: dict[str, Any] = {}

    def ref(model: type[BaseModel]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            components[name] = sub
        components[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    error_ref = ref(ErrorBody)
    described = _codes_by_status()
    auth_params = [{"name": h, "in": "header", "required": True, "schema": {"type": "string"},
                    "description": "Envelope field of Identity.sign_request (signed over method, path+query, "
                                   "body SHA-256)."} for h in AUTH_HEADERS]
    admin_param = {"name": ADMIN_TOKEN_HEADER, "in": "header", "required": True, "schema": {"type": "string"}}
    paths: dict[str, Any] = {}
    for spec in routes().values():
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", spec.path)
        params: list[dict[str, Any]] = [{"name": p, "in": "path", "required": True, "schema": _PATH_PARAMS[p]}
                                        for p in re.findall(r"\{(\w+)\}", path)]
        if spec.auth == "admin":
            params.append(admin_param)
        elif spec.auth != "none":
            params.extend(auth_params)
        responses: dict[str, Any] = {}
        if spec.response is not None:
            responses[str(spec.status)] = {"description": "OK", "content": {"application/json": {
                "schema": ref(spec.response)}}}
        for status in _error_statuses(spec.auth, spec.name):
            responses[str(status)] = {"description": described.get(status, "error"),
                                      "content": {"application/json": {"schema": error_ref}}}
        op: dict[str, Any] = {"operationId": spec.name, "summary": spec.summary, "parameters": params,
                              "responses": responses}
        if spec.request is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(spec.request)}}}
        paths.setdefault(path, {})[spec.method.lower()] = op
    paths["/openapi.json"] = {"get": {"operationId": "openapi", "responses": {"200": {"description": "this document"}}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "continuum-mcp federation coordinator",
            "version": f"1 ({__version__})",
            "description": "Every route except /v1/health and /openapi.json is signed with the X-Continuum-* "
                           "headers of Identity.sign_request; admin routes take the admin token header instead."
                           + (f" Federation {info.federation_id}, privacy mode {info.privacy_mode}." if info else ""),
        },
        "paths": paths,
        "components": {"schemas": components},
    }


__all__ = ["AUTH_HEADERS", "openapi_document"]
