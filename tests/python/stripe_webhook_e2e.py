"""Stripe webhook signatures made by the official `stripe` package, sent to the gateway.

For every case the gateway's verdict (200 or 400) must equal the stripe library's own
(`stripe.Webhook.construct_event`). Env: QM_BASE_URL, QM_WEBHOOK_SECRET, QM_OLD_SECRET.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

import stripe

BASE = os.environ["QM_BASE_URL"]
SECRET = os.environ["QM_WEBHOOK_SECRET"]
OLD_SECRET = os.environ["QM_OLD_SECRET"]
sign = stripe.WebhookSignature.generate_signature_header

passed = failed = 0


def post(body: str, header):
    req = urllib.request.Request(BASE + "/webhooks/stripe", data=body.encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    if header is not None:
        req.add_header("Stripe-Signature", header)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def library_accepts(body: str, header) -> bool:
    try:
        stripe.Webhook.construct_event(body, header, SECRET)
        return True
    except Exception:
        try:
            stripe.Webhook.construct_event(body, header, OLD_SECRET)
            return True
        except Exception:
            return False


def case(name, body, header, expect_ok):
    global passed, failed
    status, reply = post(body, header)
    lib = library_accepts(body, header)
    ok = (status == 200) == expect_ok and lib == expect_ok
    if ok and status == 400:
        ok = reply["error"]["code"] == "invalid_signature" and reply["error"]["message"]
    if ok and status == 200:
        ok = reply["received"] is True
    print(("PASS" if ok else "FAIL"), name, status, "library", "accepts" if lib else "rejects", reply)
    if ok:
        passed += 1
    else:
        failed += 1


def event(i):
    return json.dumps({"id": f"evt_py_{i}_{time.time_ns()}", "object": "event",
                       "type": "customer.created", "data": {"object": {"id": "cus_py"}}})


body = event(1)
case("signed now", body, sign(body, SECRET), True)
body = event(2)
case("signed with the old secret (rotation)", body, sign(body, OLD_SECRET), True)
body = event(3)
both = sign(body, SECRET) + ",v1=" + sign(body, "whsec_unrelated").split("v1=")[1]
case("two v1 signatures, one valid", body, both, True)
body = event(4)
case("tampered body", body.replace("cus_py", "cus_evil"), sign(body, SECRET), False)
body = event(5)
case("wrong secret", body, sign(body, "whsec_wrong"), False)
body = event(6)
case("stale (301 s)", body, sign(body, SECRET, timestamp=int(time.time()) - 301), False)
body = event(7)
case("within tolerance (250 s)", body, sign(body, SECRET, timestamp=int(time.time()) - 250), True)
body = event(8)
case("no v1 scheme", body, sign(body, SECRET).replace("v1=", "v0="), False)
body = event(9)
unicode_body = body.replace("cus_py", "cus_\u00e9\u4e2d")
case("non-ASCII body", unicode_body, sign(unicode_body, SECRET), True)

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
