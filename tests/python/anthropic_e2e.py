"""Drives the gateway's Messages door with Anthropic's official `anthropic` Python package,
as an Anthropic-SDK tool pointed at the gateway would: `messages.create` (whole and
streamed, text and tool use, through an Anthropic upstream and an OpenAI-compatible one),
the SDK's stream helpers (`text_stream`, `get_final_message`), a tool-result turn,
`messages.count_tokens`, `models.list` / `models.retrieve`, the SDK's error types, and the
`openai` package's chat completions routed to an Anthropic model.

Run by tests/it/python_sdk.rs, which starts the gateway, the OpenAI-compatible mock and the
Anthropic mock and passes QM_BASE_URL and QM_API_KEY. The `an-gold-*` models are served by
the Anthropic mock, `oa-gold-*` by the OpenAI-compatible one (tests/common/scenario.rs).
Exits non-zero on the first failed check; prints `N passed, 0 failed`.
"""
import os
import sys

import anthropic
import openai

BASE = os.environ["QM_BASE_URL"]
KEY = os.environ["QM_API_KEY"]
client = anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0)
checks = 0

TOOLS = [{
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]


def check(cond, what):
    global checks
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1


# Whole, text, through each upstream kind.
for model in ["an-gold-text", "oa-gold-text"]:
    m = client.messages.create(model=model, max_tokens=64, messages=[{"role": "user", "content": "Say hello"}])
    check(m.type == "message" and m.id.startswith("msg_") and m.role == "assistant", f"{model}: message {m.id}")
    check(m.content[0].type == "text" and m.content[0].text == "Hello from the upstream.", f"{model}: text {m.content}")
    check(m.stop_reason == "end_turn" and m.stop_sequence is None, f"{model}: stop {m.stop_reason}")
    check(m.usage.input_tokens == 11 and m.usage.output_tokens == 4, f"{model}: usage {m.usage}")
    check(m.usage.cache_read_input_tokens == 0 and m.usage.cache_creation_input_tokens == 0, f"{model}: cache usage")

# Streamed, text: the SDK's helpers assemble the same message.
for model in ["an-gold-text", "oa-gold-text"]:
    with client.messages.stream(model=model, max_tokens=64, messages=[{"role": "user", "content": "Say hello"}]) as s:
        pieces = list(s.text_stream)
        final = s.get_final_message()
    check(len(pieces) == 4 and "".join(pieces) == "Hello from the upstream.", f"{model}: stream pieces {pieces}")
    check(final.content[0].text == "Hello from the upstream." and final.stop_reason == "end_turn", f"{model}: final {final}")
    check(final.usage.output_tokens == 4 and final.usage.input_tokens == 11, f"{model}: stream usage {final.usage}")

# Raw stream events: the grammar in order.
with client.messages.create(model="an-gold-text", max_tokens=64, stream=True,
                            messages=[{"role": "user", "content": "Say hello"}]) as raw:
    types = [e.type for e in raw]
check(types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"], f"event order {types}")
check(types.count("content_block_delta") == 4 and types.count("content_block_start") == 1, f"blocks {types}")

# Tool use, whole and streamed, through both upstreams: an id, the name, the parsed input.
for model in ["an-gold-tool", "oa-gold-tool"]:
    m = client.messages.create(model=model, max_tokens=256, tools=TOOLS,
                               messages=[{"role": "user", "content": "Weather in Paris?"}])
    tool = [b for b in m.content if b.type == "tool_use"]
    check(m.stop_reason == "tool_use" and len(tool) == 1, f"{model}: tool use {m.content}")
    check(tool[0].name == "get_weather" and tool[0].input == {"city": "Paris"} and tool[0].id, f"{model}: {tool[0]}")
    with client.messages.stream(model=model, max_tokens=256, tools=TOOLS,
                                messages=[{"role": "user", "content": "Weather in Paris?"}]) as s:
        final = s.get_final_message()
    tool = [b for b in final.content if b.type == "tool_use"]
    check(len(tool) == 1 and tool[0].input == {"city": "Paris"} and tool[0].id, f"{model}: streamed tool {final.content}")
    # The turn after the tool ran.
    after = client.messages.create(model=model, max_tokens=256, tools=TOOLS, messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [b.model_dump() for b in final.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool[0].id, "content": "sunny"}]},
    ])
    check(after.content[0].text == "It is sunny in Paris." and after.stop_reason == "end_turn", f"{model}: after {after}")

# Two parallel calls.
with client.messages.stream(model="an-gold-parallel", max_tokens=256, tools=TOOLS,
                            messages=[{"role": "user", "content": "Paris and Berlin?"}]) as s:
    final = s.get_final_message()
cities = [b.input["city"] for b in final.content if b.type == "tool_use"]
ids = {b.id for b in final.content if b.type == "tool_use"}
check(cities == ["Paris", "Berlin"] and len(ids) == 2, f"parallel: {final.content}")

# A cut-off answer.
m = client.messages.create(model="oa-gold-max", max_tokens=5, messages=[{"role": "user", "content": "Tell a story"}])
check(m.stop_reason == "max_tokens" and m.content[0].text == "Once upon a time", f"max tokens: {m}")

# A failure after the stream began is an error event the SDK raises.
try:
    with client.messages.stream(model="an-gold-fail", max_tokens=64,
                                messages=[{"role": "user", "content": "Say hello"}]) as s:
        for _ in s.text_stream:
            pass
    check(False, "a mid-stream failure raises")
except anthropic.APIStatusError as e:
    check("Overloaded" in str(e), f"mid-stream error: {e}")

# count_tokens: the Anthropic upstream's own count; an estimate for others.
counted = client.messages.count_tokens(model="an-gold-text", messages=[{"role": "user", "content": "Say hello"}],
                                       tools=TOOLS)
check(counted.input_tokens > 0, f"count_tokens (Anthropic upstream): {counted}")
estimated = client.messages.count_tokens(model="oa-gold-text", messages=[{"role": "user", "content": "Say hello"}])
check(0 < estimated.input_tokens < 20, f"count_tokens (estimate): {estimated}")

# Models, as the SDK lists and retrieves them.
listed = [m.id for m in client.models.list()]
check("an-gold-text" in listed and "oa-gold-text" in listed, f"models.list: {listed}")
one = client.models.retrieve("an-gold-text")
check(one.id == "an-gold-text" and one.type == "model" and one.display_name, f"models.retrieve: {one}")

# The SDK's error types, with Anthropic's error bodies.
try:
    client.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    check(False, "an unknown model is refused")
except anthropic.NotFoundError as e:
    check(e.status_code == 404 and e.body["error"]["type"] == "not_found_error", f"404: {e.body}")
try:
    anthropic.Anthropic(base_url=BASE, api_key="qm-wrong", max_retries=0).messages.create(
        model="an-gold-text", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    check(False, "a wrong key is refused")
except anthropic.AuthenticationError as e:
    check(e.status_code == 401 and e.body["error"]["type"] == "authentication_error", f"401: {e.body}")
try:
    client.messages.create(model="an-gold-text", max_tokens=5, messages=[{"role": "system", "content": "x"}])
    check(False, "a system turn is refused")
except anthropic.BadRequestError as e:
    check(e.body["type"] == "error" and e.body["error"]["type"] == "invalid_request_error", f"400: {e.body}")
    check("messages.0.role" in e.body["error"]["message"], f"400 names the path: {e.body}")

# Bearer auth works too (the SDK's auth_token).
m = anthropic.Anthropic(base_url=BASE, auth_token=KEY, max_retries=0).messages.create(
    model="an-gold-text", max_tokens=64, messages=[{"role": "user", "content": "Say hello"}])
check(m.content[0].text == "Hello from the upstream.", "Authorization: Bearer")

# The openai package's chat completions routed to an Anthropic model: a streamed tool call.
oa = openai.OpenAI(base_url=BASE + "/v1", api_key=KEY, max_retries=0)
stream = oa.chat.completions.create(model="an-gold-tool", stream=True, messages=[{"role": "user", "content": "Weather?"}],
                                    tools=[{"type": "function", "function": {"name": "get_weather",
                                            "parameters": TOOLS[0]["input_schema"]}}])
args, call_id, finish = "", None, None
for chunk in stream:
    for c in chunk.choices:
        for t in c.delta.tool_calls or []:
            call_id = call_id or t.id
            args += t.function.arguments or ""
        finish = c.finish_reason or finish
check(args == '{"city":"Paris"}' and call_id and finish == "tool_calls", f"openai -> anthropic: {args!r} {call_id} {finish}")
done = oa.chat.completions.create(model="an-gold-text", messages=[{"role": "user", "content": "Say hello"}])
check(done.choices[0].message.content == "Hello from the upstream." and done.usage.prompt_tokens == 11, f"openai whole: {done}")

print(f"{checks} passed, 0 failed")
