"""Drives the gateway with the official `openai` Python package.

Run by tests/it/python_sdk.rs, which starts the gateway and a mock upstream and passes
QM_BASE_URL and QM_API_KEY. Exits non-zero on the first failed check.
"""
import os
import sys

import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["QM_BASE_URL"] + "/v1", api_key=os.environ["QM_API_KEY"], max_retries=0)
messages = [{"role": "user", "content": "Say hello"}]
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1


# Non-streaming.
resp = client.chat.completions.create(model="mock-ok", messages=messages)
check(resp.object == "chat.completion", "object is chat.completion")
check(resp.choices[0].message.content == "Hello from the mock", f"content: {resp.choices[0].message.content!r}")
check(resp.choices[0].finish_reason == "stop", "finish_reason stop")
check(resp.usage.total_tokens == 15, f"usage: {resp.usage}")

# Streaming with usage.
stream = client.chat.completions.create(
    model="mock-ok", messages=messages, stream=True, stream_options={"include_usage": True}
)
chunks = list(stream)
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check(text == "Hello from the mock", f"streamed text: {text!r}")
check(len({c.id for c in chunks}) == 1, "one id across the stream")
check(chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 11, f"usage chunk: {chunks[-1]}")
check(any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks), "a finish chunk")

# Models.
ids = [m.id for m in client.models.list()]
check("mock-ok" in ids, f"models: {ids}")

# Errors: unknown model, bad key, upstream 429, mid-stream failure.
try:
    client.chat.completions.create(model="no-such-model", messages=messages)
    check(False, "unknown model raises")
except openai.NotFoundError as e:
    check(e.status_code == 404 and e.code == "model_not_found", f"unknown model: {e}")

bad = OpenAI(base_url=os.environ["QM_BASE_URL"] + "/v1", api_key="qm_wrong", max_retries=0)
try:
    bad.chat.completions.create(model="mock-ok", messages=messages)
    check(False, "bad key raises")
except openai.AuthenticationError as e:
    check(e.status_code == 401 and e.code == "invalid_api_key", f"bad key: {e}")

try:
    client.chat.completions.create(model="mock-429", messages=messages)
    check(False, "upstream 429 raises")
except openai.RateLimitError as e:
    check(e.status_code == 429, f"429: {e}")

try:
    got = []
    for c in client.chat.completions.create(model="mock-fail-mid", messages=messages, stream=True):
        got.append(c)
    check(False, "mid-stream error raises")
except openai.APIError as e:
    check(len(got) >= 1, "chunks before the error arrived")
    check("mid-stream" in str(e.message) or "upstream" in str(e.message), f"mid-stream error: {e.message}")

print(f"{checks} passed, 0 failed")
