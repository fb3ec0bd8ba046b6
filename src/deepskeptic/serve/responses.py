"""JSON responses that never break: NumPy values made plain, NaN and infinities given as null (and
listed under "non_finite"), errors as {"error": "..."}."""
from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from deepskeptic.serve.bounds import json_safe


def json_response(content: Any, status: int = 200) -> Response:
    """JSON that never breaks on NaN or infinity: they become null, and "non_finite" says where."""
    content, replaced = json_safe(content)
    if replaced and isinstance(content, dict):
        content["non_finite"] = {"count": len(replaced), "paths": replaced[:20],
                                 "note": "these values were NaN or infinite and are given as null"}
    body = json.dumps(content, ensure_ascii=False, allow_nan=False).encode("utf-8")
    return Response(body, status_code=status, media_type="application/json")


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    response = json_response({"error": message}, status)
    response.headers.update(headers or {})
    return response
