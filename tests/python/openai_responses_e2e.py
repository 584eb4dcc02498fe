"""Drives the gateway's Responses API with the official `openai` Python package:
`responses.create` (whole and streamed, text and a function call), `previous_response_id`
with a function_call_output, `responses.retrieve`, `input_items.list`, `responses.delete`,
and the SDK's error types.

Run by tests/it/python_sdk.rs, which starts the gateway and a mock upstream and passes
QM_BASE_URL and QM_API_KEY. Exits non-zero on the first failed check.
"""
import json
import os
import sys

import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["QM_BASE_URL"] + "/v1", api_key=os.environ["QM_API_KEY"], max_retries=0)
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1


# Whole, text.
r = client.responses.create(model="mock-ok", input="Say hello", instructions="Be brief.")
check(r.object == "response" and r.id.startswith("resp_"), f"response object: {r.id}")
check(r.status == "completed", f"status: {r.status}")
check(r.output_text == "Hello from the mock", f"output_text: {r.output_text!r}")
check(r.output[0].type == "message" and r.output[0].content[0].type == "output_text", f"output: {r.output}")
check(r.usage.input_tokens == 11 and r.usage.output_tokens == 4 and r.usage.total_tokens == 15, f"usage: {r.usage}")
check(r.instructions == "Be brief.", "instructions echoed")

# Retrieve, input items, delete.
got = client.responses.retrieve(r.id)
check(got.id == r.id and got.output_text == "Hello from the mock", "retrieve")
items = client.responses.input_items.list(r.id)
check(len(items.data) == 1 and items.data[0].type == "message", f"input items: {items.data}")
check(items.data[0].content[0].text == "Say hello", f"input item text: {items.data[0]}")
deleted = client.responses.delete(r.id)
try:
    client.responses.retrieve(r.id)
    check(False, "a deleted response is gone")
except openai.NotFoundError as e:
    check(e.status_code == 404, "404 after delete")

# Streamed, text: the SDK's event types in order, deltas joined.
events = list(client.responses.create(model="mock-ok", input="Say hello", stream=True))
types = [e.type for e in events]
check(types[0] == "response.created" and types[1] == "response.in_progress", f"start: {types[:2]}")
check(types[-1] == "response.completed", f"end: {types[-1]}")
for t in ["response.output_item.added", "response.content_part.added", "response.output_text.delta",
          "response.output_text.done", "response.content_part.done", "response.output_item.done"]:
    check(t in types, f"{t} in {types}")
seqs = [e.sequence_number for e in events]
check(seqs == list(range(len(events))), f"sequence numbers: {seqs}")
text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
check(text == "Hello from the mock", f"streamed text: {text!r}")
done = events[-1].response
check(done.output_text == "Hello from the mock" and done.usage.total_tokens == 15, f"completed: {done}")

# The SDK's stream helper accumulates the same response.
with client.responses.stream(model="mock-ok", input="Say hello") as s:
    final = s.get_final_response()
check(final.output_text == "Hello from the mock", f"stream helper: {final.output_text!r}")

# A function call, whole, then its output sent back with previous_response_id.
tools = [{"type": "function", "name": "get_weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
r1 = client.responses.create(model="mock-tools", input="Weather in Paris?", tools=tools)
calls = [o for o in r1.output if o.type == "function_call"]
check(len(calls) == 1 and calls[0].name == "get_weather", f"function call: {r1.output}")
check(json.loads(calls[0].arguments) == {"city": "Paris"}, f"arguments: {calls[0].arguments}")
r2 = client.responses.create(
    model="mock-tools",
    previous_response_id=r1.id,
    input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": json.dumps({"sky": "sunny"})}],
    tools=tools,
)
check(r2.output_text == "It is sunny in Paris.", f"continued: {r2.output_text!r}")
check(r2.previous_response_id == r1.id, "previous_response_id echoed")

# A function call, streamed: argument deltas joined, and the item done with the whole call.
events = list(client.responses.create(model="mock-tools", input="Weather in Paris?", tools=tools, stream=True))
args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
check(json.loads(args) == {"city": "Paris"}, f"streamed arguments: {args!r}")
item_done = [e for e in events if e.type == "response.output_item.done"]
check(item_done and item_done[-1].item.type == "function_call" and item_done[-1].item.call_id == "call_mock1",
      f"item done: {item_done}")
check(events[-1].type == "response.completed", f"end: {events[-1].type}")

# store: false keeps nothing.
r = client.responses.create(model="mock-ok", input="Say hello", store=False)
try:
    client.responses.retrieve(r.id)
    check(False, "store=false is not retrievable")
except openai.NotFoundError:
    check(True, "store=false: 404")

# Errors in OpenAI's envelope, as the SDK's types.
try:
    client.responses.create(model="no-such-model", input="hi")
    check(False, "unknown model fails")
except openai.NotFoundError as e:
    check(e.code == "model_not_found", f"code: {e.code}")
try:
    client.responses.create(model="mock-ok", input="hi", previous_response_id="resp_nope")
    check(False, "unknown previous_response_id fails")
except openai.BadRequestError as e:
    check(e.param == "previous_response_id", f"param: {e.param}")
try:
    client.responses.create(model="mock-500", input="hi")
    check(False, "an upstream 500 fails")
except openai.APIStatusError as e:
    check(e.status_code >= 500, f"status: {e.status_code}")

print(f"{checks} passed, 0 failed")
