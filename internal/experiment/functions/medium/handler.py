# The medium function: a handler that imports a handful of stdlib modules at
# start-up, as a typical small service does.
import base64
import collections
import csv
import datetime
import decimal
import email.message
import hashlib
import io
import json
import re
import statistics
import urllib.parse
import xml.etree.ElementTree as ET

_WORD = re.compile(r"[a-z]+")


def handle(req):
    doc = {"at": datetime.datetime(2024, 1, 1).isoformat(), "price": str(decimal.Decimal("1.10") * 3),
           "words": collections.Counter(_WORD.findall("a b a c")), "q": urllib.parse.quote("a b")}
    text = json.dumps(doc, sort_keys=True)
    out = io.StringIO()
    csv.writer(out).writerow([len(text), statistics.mean([1, 2, 3])])
    ET.fromstring("<a><b/></a>")
    m = email.message.EmailMessage()
    m["Subject"] = "x"
    return {"sha256": hashlib.sha256(text.encode()).hexdigest(), "b64": base64.b64encode(b"hi").decode(),
            "csv": out.getvalue().strip()}
