import json
import os

_HERE = os.path.dirname(os.path.abspath(__file__))
_CACHE = None


def _load():
    with open(os.path.join(_HERE, "state.json"), "rb") as f:
        return json.load(f)


def handle(req):
    """Stateless cost: ?mode=reload reads and parses the state (state.json,
    shipped with the code) on every call, as a stateless function must;
    mode=cached keeps it in the instance after the first call; mode=passed
    parses the state the caller sends in the body."""
    global _CACHE
    mode = req.query.get("mode") or "reload"
    if mode == "cached":
        if _CACHE is None:
            _CACHE = _load()
        state = _CACHE
    elif mode == "passed":
        state = json.loads(req.body)
    else:
        state = _load()
    return {"mode": mode, "items": len(state["items"])}
