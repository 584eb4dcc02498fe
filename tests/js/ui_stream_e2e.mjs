// useChat's side of POST /api/chat, with the AI SDK's own classes: DefaultChatTransport
// sends the request exactly as useChat does and parses the UI message stream;
// readUIMessageStream assembles the message (text, tool parts, data parts, metadata);
// reconnectToStream resumes an answer still running, as useChat({ resume: true }) does.
//
// Run by tests/it/js_clients.rs with QM_BASE_URL and QM_API_KEY.
import { DefaultChatTransport, readUIMessageStream } from 'ai';

const transport = new DefaultChatTransport({
  api: process.env.QM_BASE_URL + '/api/chat',
  headers: { Authorization: `Bearer ${process.env.QM_API_KEY}` },
});
let checks = 0;

function check(cond, what) {
  if (!cond) {
    console.error(`FAILED: ${what}`);
    process.exit(1);
  }
  checks += 1;
}

const user = (id, text) => ({ id, role: 'user', parts: [{ type: 'text', text }] });

async function send(chatId, messages, model, errors = []) {
  const stream = await transport.sendMessages({
    chatId, messages, trigger: 'submit-message', messageId: undefined, abortSignal: undefined, body: { model },
  });
  let last;
  for await (const m of readUIMessageStream({ stream, onError: (e) => errors.push(e) })) last = m;
  return last;
}

const text = (m) => m.parts.filter((p) => p.type === 'text').map((p) => p.text).join('');

// Text, with the gateway's data parts and metadata.
{
  const m = await send('chat-1', [user('u1', 'Say hello')], 'mock-ok');
  check(m.role === 'assistant' && m.id.startsWith('msg_'), `message: ${JSON.stringify(m)}`);
  check(text(m) === 'Hello from the mock', `text: ${text(m)}`);
  const cache = m.parts.find((p) => p.type === 'data-cache');
  check(cache && cache.data.hit === false, `data-cache: ${JSON.stringify(m.parts)}`);
  check(m.metadata.model === 'mock-ok' && m.metadata.usage.totalTokens === 15, `metadata: ${JSON.stringify(m.metadata)}`);
}

// A tool call streamed as tool input parts, then the tool's result sent back.
{
  const history = [user('u2', 'Weather in Paris?')];
  const m = await send('chat-2', history, 'mock-tools');
  const tool = m.parts.find((p) => p.type === 'tool-get_weather');
  check(tool && tool.state === 'input-available' && tool.input.city === 'Paris', `tool part: ${JSON.stringify(m.parts)}`);
  tool.state = 'output-available';
  tool.output = { sky: 'sunny' };
  const answer = await send('chat-2', [...history, m], 'mock-tools');
  check(text(answer) === 'It is sunny in Paris.', `after the tool: ${text(answer)}`);
}

// A grounded answer: every citation is a source-document part, and a source-url part when
// its document has a `url` (the gateway runs with the embedder for this).
{
  const form = new FormData();
  form.append('file', new Blob(['# Refunds\n\nRefunds are issued within five business days of the request.\n'],
    { type: 'text/markdown' }), 'refunds.md');
  form.append('metadata', JSON.stringify({ url: 'https://help.acme.test/refunds' }));
  const ingest = await fetch(process.env.QM_BASE_URL + '/v1/documents', {
    method: 'POST', headers: { Authorization: `Bearer ${process.env.QM_API_KEY}` }, body: form,
  });
  check(ingest.status === 200, `ingest: ${ingest.status} ${await ingest.text()}`);
  const m = await send('chat-sources', [user('u6', 'How long do refunds take?')], 'rag/mock-ok');
  const docs = m.parts.filter((p) => p.type === 'source-document');
  const urls = m.parts.filter((p) => p.type === 'source-url');
  check(docs.length >= 1 && docs[0].filename === 'refunds.md' && docs[0].mediaType === 'text/plain',
    `source-document parts: ${JSON.stringify(m.parts)}`);
  check(urls.length === docs.length && urls[0].url === 'https://help.acme.test/refunds'
    && urls[0].sourceId === docs[0].sourceId, `source-url parts: ${JSON.stringify(urls)}`);
  check(text(m) === 'Hello from the mock', `grounded text: ${text(m)}`);
}

// A failure after the stream began is an error part; one before it is the HTTP error.
{
  const errors = [];
  const m = await send('chat-3', [user('u3', 'hi')], 'mock-fail-mid', errors);
  check(errors.length === 1 && text(m).length > 0, `error part: ${errors} after ${text(m)}`);
  try {
    await send('chat-4', [user('u4', 'hi')], 'no-such-model');
    check(false, 'an unknown model fails before the stream');
  } catch (e) {
    check(String(e.message).includes('model_not_found'), `pre-stream error: ${e.message}`);
  }
}

// Resume: a reader that goes away, and a reconnect that gets the whole answer.
{
  const abort = new AbortController();
  const first = await transport.sendMessages({
    chatId: 'chat-5', messages: [user('u5', 'Tell me a long story')], trigger: 'submit-message',
    messageId: undefined, abortSignal: abort.signal, body: { model: 'mock-slow' },
  });
  const reader = first.getReader();
  let seen = 0;
  while (seen < 8) {
    const { done } = await reader.read();
    if (done) break;
    seen += 1;
  }
  abort.abort();
  const resumed = await transport.reconnectToStream({ chatId: 'chat-5' });
  check(resumed !== null, 'a running answer can be resumed');
  let m;
  for await (const x of readUIMessageStream({ stream: resumed })) m = x;
  const words = text(m).split(' ').length;
  check(words >= 150, `the resumed answer is whole: ${words} words`);
  check(m.parts.some((p) => p.type === 'data-route') || m.parts.some((p) => p.type === 'data-cache'), 'resumed from the start');
  const none = await transport.reconnectToStream({ chatId: 'chat-5' });
  check(none === null, 'nothing to resume once it finished (204)');
}

console.log(`${checks} passed, 0 failed`);
