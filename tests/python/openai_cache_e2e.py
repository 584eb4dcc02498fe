"""Cache hits as the official `openai` Python package sees them.

Run by tests/it/python_sdk.rs against a gateway with the cache on. A streamed answer is asked
twice: the second time it is replayed from the cache, and the client must parse it exactly
as it parsed the live stream (same text, one id, a finish chunk, a usage chunk).
"""
import os
import sys
import time

from openai import OpenAI

client = OpenAI(base_url=os.environ["QM_BASE_URL"] + "/v1", api_key=os.environ["QM_API_KEY"], max_retries=0)
messages = [{"role": "user", "content": "Summarise the onboarding checklist."}]
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1


def stream_once():
    raw = client.chat.completions.with_raw_response.create(
        model="mock-ok", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(raw.parse())
    return raw.headers.get("x-quartermaster-cache"), chunks


status, live = stream_once()
check(status == "miss", f"first answer is live: {status}")
live_text = "".join(c.choices[0].delta.content or "" for c in live if c.choices)

# The answer is stored after the stream ends, off the request path: poll briefly.
polled_misses = 0
for _ in range(50):
    status, replay = stream_once()
    if status == "hit":
        break
    polled_misses += 1
    time.sleep(0.1)
check(status == "hit", f"the second answer comes from the cache: {status}")
text = "".join(c.choices[0].delta.content or "" for c in replay if c.choices)
check(text == live_text, f"replayed text {text!r} == live {live_text!r}")
check(len([c for c in replay if c.choices]) >= 3, f"several chunks: {len(replay)}")
check(len({c.id for c in replay}) == 1, "one id across the replay")
check(replay[0].choices[0].delta.role == "assistant", "first chunk has the role")
check(any(c.choices and c.choices[0].finish_reason == "stop" for c in replay), "a finish chunk")
check(replay[-1].choices == [] and replay[-1].usage.completion_tokens > 0, f"usage chunk: {replay[-1]}")

# The same question, not streamed: the same entry, as a chat.completion.
raw = client.chat.completions.with_raw_response.create(model="mock-ok", messages=messages)
check(raw.headers.get("x-quartermaster-cache") == "hit", "non-streamed hit")
check(raw.headers.get("x-quartermaster-cache-kind") == "exact", "exact kind")
resp = raw.parse()
check(resp.choices[0].message.content == live_text, f"content: {resp.choices[0].message.content!r}")
check(resp.choices[0].message.role == "assistant", "role")

# Skipping the cache by header, through the client's extra_headers.
raw = client.chat.completions.with_raw_response.create(
    model="mock-ok", messages=messages, extra_headers={"x-quartermaster-cache": "no-read"}
)
check(raw.headers.get("x-quartermaster-cache") == "bypass", "no-read bypasses")

# Grounded chat: a document ingested over HTTP, then asked about with the `rag/` model
# prefix. The citations are an extra top-level field the client keeps (model_extra).
import json
import urllib.request

doc = json.dumps({"id": "handbook", "title": "Acme handbook", "text": "Refunds are issued within 14 days."}).encode()
req = urllib.request.Request(
    os.environ["QM_BASE_URL"] + "/v1/documents",
    data=doc,
    headers={"Authorization": "Bearer " + os.environ["QM_API_KEY"], "Content-Type": "application/json"},
)
with urllib.request.urlopen(req) as r:
    check(json.load(r)["data"][0]["status"] in ("created", "unchanged"), "document ingested")
question = [{"role": "user", "content": "How quickly are refunds issued?"}]
resp = client.chat.completions.create(model="rag/mock-ok", messages=question)
citations = (resp.model_extra or {}).get("citations")
check(citations and citations[0]["document_id"] == "handbook", f"citations: {citations}")
chunks = list(client.chat.completions.create(model="rag/mock-ok", messages=question, stream=True,
                                             extra_headers={"x-quartermaster-cache": "off"}))
first = (chunks[0].model_extra or {}).get("citations")
check(first and first[0]["chunk_id"] == "handbook#0", f"streamed citations: {first}")
check(all(not (c.model_extra or {}).get("citations") for c in chunks[1:]), "citations once")

print(f"polled_misses={polled_misses}")
print(f"{checks} passed, 0 failed")
