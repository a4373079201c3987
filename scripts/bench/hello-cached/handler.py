def handle(req):
    return "hello"
