"""Drives two gateway replicas on one PostgreSQL, behind nginx (round robin), with the
official `openai` Python package: a key's tokens-per-minute limit holds across the
replicas as in one process, an answer cached through one replica is an exact and a
semantic hit through the other, an invalidation through one takes effect on the other, and
an `Idempotency-Key` retry through the other replica replays the first answer.

Run by tests/it/replicas.rs, which starts PostgreSQL's database, the mock upstream, the
replicas and nginx, and passes QM_LB_URL, QM_A_URL, QM_B_URL, QM_API_KEY and two keys with
the same limit: QM_LIMITED_SINGLE_KEY (used on replica A alone) and QM_LIMITED_LB_KEY (used
through nginx). Prints `N passed, 0 failed`.
"""
import os
import sys
import time
import uuid

import httpx
import openai

LB, A, B = os.environ["QM_LB_URL"], os.environ["QM_A_URL"], os.environ["QM_B_URL"]
KEY = os.environ["QM_API_KEY"]
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1


def client(base, key=KEY):
    return openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)


def ask(c, text, headers=None, **kw):
    """One chat completion; returns (headers, content)."""
    raw = c.chat.completions.with_raw_response.create(
        model="mock-ok", messages=[{"role": "user", "content": text}], extra_headers=headers or {}, **kw)
    return raw.headers, raw.parse().choices[0].message.content


def fresh_minute():
    """Waits for a new minute when this one is nearly over (a count must not straddle two)."""
    if time.time() % 60 > 45:
        time.sleep(60 - time.time() % 60 + 0.2)


def admitted(c, tries=60):
    """Requests answered before the first 429, one at a time."""
    n = 0
    for _ in range(tries):
        try:
            ask(c, "Count me", {"x-quartermaster-cache": "off"}, max_tokens=10)
            n += 1
        except openai.RateLimitError as e:
            check(e.code == "tokens_per_minute_exceeded", f"the limit's code: {e.code}")
            return n
    return n


# 1. Limits: the same limit on one replica alone, and through both.
fresh_minute()
single = admitted(client(A, os.environ["QM_LIMITED_SINGLE_KEY"]))
fresh_minute()
through_both = admitted(client(LB, os.environ["QM_LIMITED_LB_KEY"]))
print(f"tokens-per-minute limit: {single} requests on one replica, {through_both} through two behind nginx")
check(0 < single < 60, f"the limit refuses on one replica ({single})")
check(through_both <= single + 1, f"two replicas allow no more than one does: {through_both} vs {single}")
check(through_both >= single - 1, f"and not much less: {through_both} vs {single}")

# 2. The cache, shared: written through A, an exact and a semantic hit through B.
q = f"How do I rotate the signing key of workspace {uuid.uuid4().hex[:8]}?"
h, first = ask(client(A), q)
check(h["x-quartermaster-cache"] == "miss", f"first ask is a miss: {h['x-quartermaster-cache']}")
entry = None
for _ in range(100):
    h, content = ask(client(B), q, {"x-quartermaster-cache": "no-write"})
    if h["x-quartermaster-cache"] == "hit":
        entry = h["x-quartermaster-cache-entry"]
        break
    time.sleep(0.05)
check(entry is not None, "an exact hit through the other replica")
check(h["x-quartermaster-cache-kind"] == "exact" and content == first, f"exact: {h['x-quartermaster-cache-kind']}")
paraphrase = q.replace("How do I", "How can I")
semantic = None
for _ in range(100):
    h, content = ask(client(B), paraphrase, {"x-quartermaster-cache": "no-write",
                                             "x-quartermaster-cache-threshold": "0.85"})
    if h["x-quartermaster-cache"] == "hit":
        semantic = h
        break
    time.sleep(0.05)
check(semantic is not None, "a semantic hit through the other replica")
check(semantic["x-quartermaster-cache-kind"] == "semantic" and content == first, "semantic hit's answer")
check(semantic["x-quartermaster-cache-entry"] == entry, "the same entry")

# 3. Invalidation through A takes effect on B.
r = httpx.delete(f"{A}/v1/cache/entries/{entry}", headers={"Authorization": f"Bearer {KEY}"})
check(r.status_code == 200, f"invalidated through A: {r.status_code} {r.text}")
h, _ = ask(client(B), q, {"x-quartermaster-cache": "no-write"})
check(h["x-quartermaster-cache"] == "miss", f"exact miss on B after the invalidation: {h['x-quartermaster-cache']}")
h, _ = ask(client(B), paraphrase, {"x-quartermaster-cache": "no-write", "x-quartermaster-cache-threshold": "0.85"})
check(h["x-quartermaster-cache"] == "miss", f"semantic miss on B after the invalidation: {h['x-quartermaster-cache']}")

# 4. An Idempotency-Key retry through the other replica replays.
key = f"idem-{uuid.uuid4().hex}"
h1, c1 = ask(client(A), "Once only, please", {"Idempotency-Key": key, "x-quartermaster-cache": "off"})
h2, c2 = ask(client(B), "Once only, please", {"Idempotency-Key": key, "x-quartermaster-cache": "off"})
check(h2.get("idempotent-replayed") == "true", f"replayed through B: {dict(h2)}")
check(c1 == c2, "the same answer")

print(f"{checks} passed, 0 failed")
