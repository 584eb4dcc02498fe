// Drives the gateway's Responses API with OpenAI's official Node client: responses.create
// (whole and streamed), previous_response_id, retrieve, input items, delete, and the
// client's error types. Run by tests/it/js_clients.rs with QM_BASE_URL and QM_API_KEY.
import OpenAI from 'openai';

const client = new OpenAI({ baseURL: process.env.QM_BASE_URL + '/v1', apiKey: process.env.QM_API_KEY, maxRetries: 0 });
let checks = 0;

function check(cond, what) {
  if (!cond) {
    console.error(`FAILED: ${what}`);
    process.exit(1);
  }
  checks += 1;
}

const r = await client.responses.create({ model: 'mock-ok', input: 'Say hello' });
check(r.object === 'response' && r.status === 'completed', `response: ${JSON.stringify(r)}`);
check(r.output_text === 'Hello from the mock', `output_text: ${r.output_text}`);
check(r.usage.total_tokens === 15, `usage: ${JSON.stringify(r.usage)}`);

const stream = await client.responses.create({ model: 'mock-ok', input: 'Say hello', stream: true });
let text = '';
let last;
for await (const event of stream) {
  if (event.type === 'response.output_text.delta') text += event.delta;
  last = event;
}
check(text === 'Hello from the mock', `streamed: ${text}`);
check(last.type === 'response.completed' && last.response.output[0].content[0].text === text,
  `completed: ${JSON.stringify(last)}`);

const next = await client.responses.create({ model: 'mock-ok', input: 'And again', previous_response_id: r.id });
check(next.previous_response_id === r.id, 'previous_response_id echoed');
const got = await client.responses.retrieve(r.id);
check(got.id === r.id && got.output_text === 'Hello from the mock', `retrieve: ${got.output_text}`);
const items = await client.responses.inputItems.list(next.id);
check(items.data.length === 1 && items.data[0].content[0].text === 'And again', `input items: ${JSON.stringify(items.data)}`);
await client.responses.delete(r.id);
try {
  await client.responses.retrieve(r.id);
  check(false, 'deleted');
} catch (e) {
  check(e instanceof OpenAI.NotFoundError, `404 after delete: ${e}`);
}
try {
  await client.responses.create({ model: 'no-such-model', input: 'hi' });
  check(false, 'unknown model');
} catch (e) {
  check(e instanceof OpenAI.NotFoundError && e.code === 'model_not_found', `model_not_found: ${e.code}`);
}

console.log(`${checks} passed, 0 failed`);
