import hashlib


def handle(req):
    """Chained functions: ?role=produce&size=N answers N bytes (function A);
    ?role=consume reads the body it is given and answers its size and digest
    (function B). The harness feeds A's output to B."""
    if req.query.get("role") == "produce":
        return b"w" * int(req.query.get("size") or 0)
    body = req.body or b""
    return {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
