import os


def handle(req):
    """Greets the caller. POST a JSON body like {"name": "Ada"} or pass ?name=Ada."""
    name = req.query.get("name")
    if not name and req.body:
        try:
            name = req.json().get("name")
        except (ValueError, AttributeError):
            name = req.body.decode(errors="replace").strip()
    greeting = os.environ.get("GREETING", "Hello")
    return {"message": f"{greeting}, {name or 'world'}!", "pid": os.getpid()}
