// A real browser (Debian's Chromium, driven by playwright-core) calling the gateway from
// another origin: preflighted requests (JSON with an Authorization header), a JSON answer, a streamed /api/chat read with the Fetch API,
// an error readable by the page, exposed headers, credentials, and an origin that is not
// allowed. Run by tests/it/js_clients.rs, which configures `[server.cors]` with the page
// origin http://localhost:$QM_PAGE_PORT (credentials allowed) and passes the ports.
import http from 'node:http';
import { chromium } from 'playwright-core';

const base = process.env.QM_BASE_URL;
const key = process.env.QM_API_KEY;
let checks = 0;
function check(cond, what) {
  if (!cond) {
    console.error(`FAILED: ${what}`);
    process.exit(1);
  }
  checks += 1;
}

function servePage(port) {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>frontend</title><p>frontend</p>');
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

const allowed = await servePage(Number(process.env.QM_PAGE_PORT));
const other = await servePage(Number(process.env.QM_OTHER_PORT));
const browser = await chromium.launch({
  executablePath: process.env.QM_CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run'],
});
try {
  const page = await browser.newPage();
  await page.goto(`http://localhost:${process.env.QM_PAGE_PORT}/`);

  // JSON with an Authorization header: a preflighted request.
  const chat = await page.evaluate(async ({ base, key }) => {
    const r = await fetch(`${base}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'mock-ok', messages: [{ role: 'user', content: 'browser hello' }] }),
    });
    return { status: r.status, body: await r.json(), requestId: r.headers.get('x-request-id'),
      model: r.headers.get('x-quartermaster-model') };
  }, { base, key });
  check(chat.status === 200, `chat status ${chat.status}`);
  check(chat.body.choices[0].message.content === 'Hello from the mock', `chat body ${JSON.stringify(chat.body)}`);
  check(typeof chat.requestId === 'string' && chat.requestId.length > 0, 'x-request-id is exposed');
  check(chat.model === 'mock-ok', `x-quartermaster-model is exposed: ${chat.model}`);

  // The UI message stream, read chunk by chunk as useChat's transport reads it.
  const ui = await page.evaluate(async ({ base, key }) => {
    const r = await fetch(`${base}/api/chat`, {
      method: 'POST',
      credentials: 'include',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ id: 'browser-chat', model: 'mock-ok', trigger: 'submit-message',
        messages: [{ id: 'u1', role: 'user', parts: [{ type: 'text', text: 'stream to the browser' }] }] }),
    });
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let text = '';
    let reads = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      reads += 1;
      text += decoder.decode(value, { stream: true });
    }
    return { status: r.status, stream: r.headers.get('x-vercel-ai-ui-message-stream'), text, reads };
  }, { base, key });
  check(ui.status === 200, `/api/chat status ${ui.status}`);
  const parts = ui.text.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6));
  check(parts.at(-1) === '[DONE]', `stream ends with [DONE]: ${parts.at(-1)}`);
  const deltas = parts.slice(0, -1).map((p) => JSON.parse(p)).filter((p) => p.type === 'text-delta');
  check(deltas.map((d) => d.delta).join('') === 'Hello from the mock', `streamed text: ${ui.text}`);

  // An error is readable by the page (the CORS headers are on error answers too).
  const denied = await page.evaluate(async ({ base }) => {
    const r = await fetch(`${base}/v1/responses`, {
      method: 'POST',
      headers: { authorization: 'Bearer qm-not-a-key', 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'mock-ok', input: 'hi' }),
    });
    return { status: r.status, body: await r.json() };
  }, { base });
  check(denied.status === 401, `bad key status ${denied.status}`);
  check(denied.body.error && denied.body.error.message, `bad key body ${JSON.stringify(denied.body)}`);

  // From an origin that is not allowed, the browser refuses: the preflight fails and the
  // POST is never sent (the Rust side checks the upstream saw no third call).
  const page2 = await browser.newPage();
  await page2.goto(`http://localhost:${process.env.QM_OTHER_PORT}/`);
  const refused = await page2.evaluate(async ({ base, key }) => {
    try {
      await fetch(`${base}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'mock-ok', messages: [{ role: 'user', content: 'not allowed' }] }),
      });
      return 'fetched';
    } catch (e) {
      return e.name;
    }
  }, { base, key });
  check(refused === 'TypeError', `a disallowed origin is refused: ${refused}`);
} finally {
  await browser.close();
  allowed.close();
  other.close();
}
console.log(`browser cors: ${checks} passed, 0 failed`);
