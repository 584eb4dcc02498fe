// Drives the gateway with the Vercel AI SDK exactly as the client brief's code does:
// streamText with openai('<model>') (the Responses API path, the SDK's default),
// openai.chat('<model>') (chat completions) and createOpenAICompatible; text, a tool call
// (tool() with a zod schema, the mock upstream streaming the call), a tool round trip,
// usage, and an upstream error surfacing as the SDK's error type.
//
// Run by tests/it/js_clients.rs with QM_BASE_URL and QM_API_KEY. Exits non-zero on the first
// failed check.
import { APICallError, generateText, stepCountIs, streamText, tool } from 'ai';
import { createOpenAI } from '@ai-sdk/openai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { z } from 'zod';

const baseURL = process.env.QM_BASE_URL + '/v1';
const apiKey = process.env.QM_API_KEY;
const openai = createOpenAI({ baseURL, apiKey });
let checks = 0;

function check(cond, what) {
  if (!cond) {
    console.error(`FAILED: ${what}`);
    process.exit(1);
  }
  checks += 1;
}

async function streamed(model) {
  const result = streamText({ model, prompt: 'Say hello', maxRetries: 0 });
  let text = '';
  for await (const t of result.textStream) text += t;
  return { text, usage: await result.usage, finishReason: await result.finishReason };
}

// The brief's code: the default model is the Responses API.
for (const [name, model] of [
  ['openai (responses)', openai('mock-ok')],
  ['openai.chat', openai.chat('mock-ok')],
  ['openai-compatible', createOpenAICompatible({ name: 'qm', baseURL, apiKey, includeUsage: true })('mock-ok')],
]) {
  const r = await streamed(model);
  check(r.text === 'Hello from the mock', `${name}: text ${JSON.stringify(r.text)}`);
  check(r.finishReason === 'stop', `${name}: finish ${r.finishReason}`);
  check(r.usage.inputTokens === 11 && r.usage.outputTokens === 4, `${name}: usage ${JSON.stringify(r.usage)}`);
}

// Whole (generateText) on the Responses path.
{
  const r = await generateText({ model: openai('mock-ok'), prompt: 'Say hello', maxRetries: 0 });
  check(r.text === 'Hello from the mock', `generateText: ${JSON.stringify(r.text)}`);
}

const weather = tool({
  description: 'The weather in a city',
  inputSchema: z.object({ city: z.string() }),
});

// A tool call, streamed, on both paths: the call's input is parsed against the schema.
for (const [name, model] of [['responses', openai('mock-tools')], ['chat', openai.chat('mock-tools')]]) {
  const result = streamText({ model, prompt: 'Weather in Paris?', tools: { get_weather: weather }, maxRetries: 0 });
  const parts = [];
  for await (const p of result.fullStream) parts.push(p.type);
  const calls = await result.toolCalls;
  check(calls.length === 1 && calls[0].toolName === 'get_weather', `${name}: tool calls ${JSON.stringify(calls)}`);
  check(calls[0].input.city === 'Paris', `${name}: tool input ${JSON.stringify(calls[0].input)}`);
  check((await result.finishReason) === 'tool-calls', `${name}: finish ${await result.finishReason}`);
  check(parts.includes('tool-input-delta'), `${name}: the arguments arrived as deltas: ${parts}`);
}

// A tool round trip: the SDK runs the tool and sends its output back (function_call and
// function_call_output items on the Responses path).
for (const [name, model] of [['responses', openai('mock-tools')], ['chat', openai.chat('mock-tools')]]) {
  const result = await generateText({
    model,
    prompt: 'Weather in Paris?',
    tools: { get_weather: tool({ ...weather, execute: async ({ city }) => ({ city, sky: 'sunny' }) }) },
    stopWhen: stepCountIs(3),
    maxRetries: 0,
  });
  check(result.text === 'It is sunny in Paris.', `${name}: round trip ${JSON.stringify(result.text)}`);
  check(result.steps.length === 2, `${name}: two steps, got ${result.steps.length}`);
}

// An upstream failure is the SDK's APICallError, with the gateway's status.
for (const [name, model] of [['responses', openai('mock-500')], ['chat', openai.chat('mock-500')]]) {
  try {
    await generateText({ model, prompt: 'hi', maxRetries: 0 });
    check(false, `${name}: an upstream 500 fails`);
  } catch (e) {
    check(APICallError.isInstance(e), `${name}: APICallError, got ${e?.constructor?.name}: ${e}`);
    check(e.statusCode >= 500, `${name}: status ${e.statusCode}`);
  }
}

console.log(`${checks} passed, 0 failed`);
