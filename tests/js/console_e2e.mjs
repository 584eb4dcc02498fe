// The operator console (console/, served by the gateway under /console/) in a real browser
// (Debian's Chromium, driven by playwright-core): sign-in, the overview's charts, a key
// created with its secret shown once, the tenants' limits and budgets, a document uploaded
// and retrieved as that key's tenant, a grounded chat in the playground (useChat over
// /api/chat) and one through a picked tier, a dead job re-driven, the cache's stats and a tag
// invalidated, the audit log newest first, the operators with their second factor, and an
// operator enrolling TOTP and signing in with a code.
//
// Run by tests/it/console.rs with QM_BASE_URL, QM_ADMIN_KEY, QM_OPERATOR_KEY (role
// `operator`), and optionally QM_SCREENSHOTS (a PNG per page) and QM_FAILURE_DIR (a
// screenshot and the page's HTML on failure; a temporary directory when unset). The
// gateway has traffic, tenant `acme` (no limits configured), tiers `cheap` and `strong`, and
// one dead job.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const base = process.env.QM_BASE_URL;
const adminKey = process.env.QM_ADMIN_KEY;
const operatorKey = process.env.QM_OPERATOR_KEY;
const WAIT_MS = 20_000;
let checks = 0;
let step = 'start';

function check(cond, what) {
  if (!cond) throw new Error(what);
  checks += 1;
}

/** Waits (bounded) until `locator` is visible; a check. */
async function see(locator, what) {
  try {
    await locator.first().waitFor({ state: 'visible', timeout: WAIT_MS });
  } catch {
    throw new Error(`not visible within ${WAIT_MS / 1000} s: ${what}`);
  }
  checks += 1;
}

/** Polls `probe` until it is true, at most WAIT_MS; a check. */
async function until(probe, what) {
  const deadline = Date.now() + WAIT_MS;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`not within ${WAIT_MS / 1000} s: ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  checks += 1;
}

// RFC 6238 TOTP: HMAC-SHA1 over the 30 s step, dynamic truncation, 6 digits.
function base32(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of text.replace(/=+$/, '').toUpperCase()) {
    bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  }
  const bytes = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) bytes.push(parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(bytes);
}
const totpStep = () => Math.floor(Date.now() / 30_000);
function totp(secret, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = crypto.createHmac('sha1', base32(secret)).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  return String((mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).padStart(6, '0');
}
const secondsIntoStep = () => (Date.now() % 30_000) / 1000;
/** The current code, once the clock is `from` to `to` seconds into its step (waits < 30 s). */
async function codeBetween(secret, from, to) {
  while (secondsIntoStep() < from || secondsIntoStep() >= to) await new Promise((r) => setTimeout(r, 250));
  return { step: totpStep(), code: totp(secret, totpStep()) };
}
/** The code of a step after `used` (the gateway takes a code once). */
async function freshCode(secret, used) {
  while (totpStep() <= used) await new Promise((r) => setTimeout(r, 250));
  return { step: totpStep(), code: totp(secret, totpStep()) };
}

const browser = await chromium.launch({
  executablePath: process.env.QM_CHROMIUM || '/usr/bin/chromium',
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--no-first-run',
  ],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
page.setDefaultTimeout(WAIT_MS);
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(e.message));

async function screenshot(name) {
  if (!process.env.QM_SCREENSHOTS) return;
  fs.mkdirSync(process.env.QM_SCREENSHOTS, { recursive: true });
  await page.screenshot({
    path: path.join(process.env.QM_SCREENSHOTS, `${name}.png`),
  });
}

async function signIn(key) {
  await page.getByLabel('Admin or operator key').fill(key);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

async function open(label) {
  step = label;
  await page
    .getByRole('navigation', { name: 'Console' })
    .getByRole('link', { name: label, exact: true })
    .click();
  await see(page.getByRole('heading', { level: 1, name: label }), `the ${label} page`);
}

const table = (name) => page.getByRole('table', { name, exact: true });

try {
  // Sign in with the admin key: the overview and its charts.
  step = 'sign-in';
  await page.goto(`${base}/console/`);
  await signIn(adminKey);
  await see(page.getByRole('heading', { level: 1, name: 'Overview' }), 'the overview after signing in');
  const stored = await page.evaluate(() => JSON.stringify(sessionStorage));
  check(!stored.includes(adminKey), 'the key itself is not kept in the browser, only the session token');
  step = 'overview';
  for (const chart of ['Requests and errors', 'Spend and cache savings (USD)', 'Cache hit rate', 'Latency']) {
    await see(
      page.getByRole('figure', { name: chart }).locator('svg.recharts-surface'),
      `the chart ${chart}`,
    );
  }
  await see(
    page.getByRole('figure', { name: 'Requests and errors' }).locator('path.recharts-line-curve'),
    'the requests line is drawn',
  );
  await see(table('By tenant').locator('tbody tr'), 'the traffic per tenant');
  await screenshot('overview');

  // A key for tenant acme: its secret shown once, the key listed.
  await open('Keys');
  await page.getByLabel('Tenant', { exact: true }).fill('acme');
  await page.getByLabel('Name', { exact: true }).fill('console-e2e');
  await page.getByRole('button', { name: 'Create key' }).click();
  await see(page.getByTestId('new-key-secret'), "the new key's secret");
  const secret = (await page.getByTestId('new-key-secret').textContent()).trim();
  check(secret.startsWith('qm_'), `the secret: ${secret}`);
  await see(page.getByText('it is shown only once'), 'the shown-once warning');
  await see(
    table('Keys').locator('tr', { hasText: 'console-e2e' }).filter({ hasText: 'acme' }),
    'the new key listed',
  );
  await page.getByRole('button', { name: 'Use for documents and playground' }).click();
  await screenshot('keys');

  // The tenants: acme's limits and budgets with what it spent (none configured: no limit).
  await open('Tenants & users');
  const acmeLimits = table('Limits and budgets').locator('tr', { hasText: 'acme' });
  await see(acmeLimits, "acme's limits");
  await see(acmeLimits.getByText(/^\$[\d.,]+ (of \$[\d.,]+ )?today/), "acme's spend today");
  await see(acmeLimits.getByText(/^\$[\d.,]+ (of \$[\d.,]+ )?this month/), "acme's spend this month");
  check((await acmeLimits.getByText('no limit').count()) > 0, 'no limit configured for acme');
  await screenshot('tenants');

  // As acme: upload a document with progress, see it listed, retrieve a chunk of it.
  await open('Documents');
  await see(
    page.getByText(`acting as the tenant of key ${secret.slice(0, 10)}`),
    'the documents page uses the new key',
  );
  await page.getByLabel(/Upload a document/).setInputFiles({
    name: 'refunds.txt',
    mimeType: 'text/plain',
    buffer: Buffer.from('Refunds\n\nRefunds are issued within five business days of the request.\n'),
  });
  await see(page.getByRole('progressbar', { name: 'Upload progress' }), "the upload's progress bar");
  await see(table('Documents').getByText('refunds.txt'), 'the uploaded document listed');
  await page.getByLabel('Query', { exact: true }).fill('How long do refunds take?');
  await page.getByRole('button', { name: 'Retrieve' }).click();
  await see(
    page.getByRole('list', { name: 'Retrieved chunks' }).getByText('five business days'),
    'a retrieved chunk',
  );
  await screenshot('documents');

  // The playground: a grounded answer streamed through useChat, with its sources, route
  // and cache.
  await open('Playground');
  await page.getByRole('combobox', { name: /^Model/ }).selectOption('mock-ok');
  check(await page.getByLabel(/Ground answers/).isChecked(), 'grounding is on');
  await page.getByLabel('Message', { exact: true }).fill('How long do refunds take?');
  await page.getByRole('button', { name: 'Send' }).click();
  const answer = page.getByTestId('message-assistant').last();
  await see(answer.getByText('Hello from the mock'), 'the streamed answer');
  await see(answer.getByRole('region', { name: 'Sources' }).getByRole('listitem'), "the answer's sources");
  await see(
    answer.getByText(/^Route: (no tier, explicit → mock-ok|none, answered from the cache)$/),
    'the route',
  );
  await see(answer.getByText(/^Cache: (miss|hit|bypassed)/), 'the cache outcome');
  // Through a picked tier: model auto with the tier hint, and the route says so.
  await page.getByRole('combobox', { name: /^Tier/ }).selectOption('cheap');
  check(
    await page.getByRole('combobox', { name: /^Model/ }).isDisabled(),
    'the model is auto when a tier is picked',
  );
  await page.getByLabel('Message', { exact: true }).fill('Which tier answers this one?');
  await page.getByRole('button', { name: 'Send' }).click();
  await until(
    async () => (await page.getByTestId('message-assistant').count()) === 2,
    'a second answer',
  );
  const tiered = page.getByTestId('message-assistant').nth(1);
  await see(tiered.getByText('Hello from the mock'), 'the answer through the tier');
  await see(tiered.getByText(/^Route: tier cheap, hint → mock-ok$/), 'the route through the picked tier');
  await screenshot('playground');

  // The dead job: its last error, re-driven, gone from the dead letters.
  await open('Jobs');
  const deadRows = table('Dead letters').locator('tbody tr');
  await see(deadRows, 'a dead job');
  const deadId = (await deadRows.first().locator('td').first().textContent()).trim();
  const lastError = (await deadRows.first().locator('td').nth(3).textContent()).trim();
  check(
    deadId.length > 0 && lastError.length > 0,
    `the dead job ${deadId} with its last error "${lastError}"`,
  );
  await screenshot('jobs');
  await page.getByRole('button', { name: `Re-drive ${deadId}` }).click();
  await until(
    async () => (await table('Dead letters').getByText(deadId, { exact: true }).count()) === 0,
    `${deadId} leaves the dead letters`,
  );
  check((await page.getByRole('alert').count()) === 0, 'the re-drive reported no error');

  // The cache: entries, hits, the false-hit estimate; a tag invalidated.
  await open('Cache');
  await see(page.locator('.stat', { hasText: 'Entries' }), 'the entries count');
  await see(page.locator('.stat', { hasText: 'Hits (30 days)' }), 'the hit stats');
  await see(table('Cache per tenant').getByText(/semantic hits/), 'the false-hit estimate');
  await page.getByLabel('Tags (comma-separated)').fill('console-e2e');
  await page.getByRole('button', { name: 'Invalidate tags' }).click();
  await see(page.getByRole('status').getByText(/^Invalidated \d+ entr/), "the invalidation's result");
  await screenshot('cache');

  await open('Routing');
  await see(table('Tiers').getByText('cheap'), 'the tiers');
  await see(table('Decisions').locator('tbody tr'), 'the routing decisions');
  await see(
    page.getByRole('figure', { name: 'Threshold curve' }).locator('path.recharts-line-curve'),
    "the classifier's threshold curve",
  );
  await screenshot('routing');

  // The audit log, newest first: the re-drive above the key's creation.
  await open('Audit log');
  const created = table('Audit log').locator('tbody tr', { hasText: 'key.create' }).filter({ hasText: 'acme' });
  const redriven = table('Audit log').locator('tbody tr', { hasText: `/admin/jobs/${deadId}/redrive` });
  await see(created, 'the key creation audited');
  await see(redriven, 'the re-drive audited');
  const seqs = (await table('Audit log').locator('tbody tr td:first-child').allTextContents()).map(Number);
  check(
    seqs.length > 1 && seqs.every((n, i) => i === 0 || n < seqs[i - 1]),
    `the audit log newest first: ${seqs.slice(0, 10).join(', ')}`,
  );
  const seqOf = async (row) => Number(await row.first().locator('td').first().textContent());
  check((await seqOf(redriven)) > (await seqOf(created)), 'the re-drive listed above the key creation');
  await screenshot('audit');

  // An operator enrols TOTP, then signing in asks for a code.
  step = 'mfa';
  await page.getByRole('button', { name: 'Sign out' }).click();
  await see(page.getByLabel('Admin or operator key'), 'the sign-in after signing out');
  await signIn(operatorKey);
  await see(page.getByRole('heading', { level: 1, name: 'Overview' }), 'the operator signed in');
  await open('Account');
  const signedInAs = page.locator('.stat', { hasText: 'Signed in as' }).locator('.stat-value');
  await see(signedInAs, 'who is signed in');
  const operator = (await signedInAs.textContent()).trim();
  check(operator.startsWith('operator:'), `signed in as an operator: ${operator}`);
  const operatorRow = () => table('Operators').locator('tr', { hasText: operator });
  await see(operatorRow().getByText('off', { exact: true }), 'the operators listed, this one without a second factor');
  await see(table('Operators').locator('tr', { hasText: 'admin-key' }), 'the admin key listed');
  await page.getByRole('button', { name: 'Set up two-factor authentication' }).click();
  await see(page.getByLabel('TOTP QR code'), 'the QR code');
  const uri = (await page.getByTestId('otpauth-uri').textContent()).trim();
  check(uri.startsWith('otpauth://totp/'), `the otpauth URI: ${uri}`);
  const totpSecret = new URL(uri).searchParams.get('secret');
  check(/^[A-Z2-7]+=*$/.test(totpSecret ?? ''), `the URI's base32 secret: ${totpSecret}`);
  // A wrong code is refused, and the operator stays signed in.
  await page.getByLabel('Code from the app').fill('000000');
  await page.getByRole('button', { name: 'Confirm' }).click();
  await see(page.getByRole('alert').getByText(/invalid_mfa_code/), 'a wrong code refused');
  check(await page.getByLabel('Code from the app').isVisible(), 'still enrolling after a wrong code');
  // Confirmed 10 to 25 s into a step: the code has time left, and the next step (the next
  // fresh code) is at most 20 s away.
  const first = await codeBetween(totpSecret, 10, 25);
  await page.getByLabel('Code from the app').fill(first.code);
  await page.getByRole('button', { name: 'Confirm' }).click();
  await see(page.getByRole('status').getByText('Two-factor authentication is on'), 'the enrolment confirmed');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await signIn(operatorKey);
  await see(page.getByLabel('Authentication code'), 'the sign-in asks for a code');
  const second = await freshCode(totpSecret, first.step);
  await page.getByLabel('Authentication code').fill(second.code);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await see(page.getByRole('heading', { level: 1, name: 'Overview' }), 'signed in with the code');
  await see(
    page.getByRole('navigation', { name: 'Console' }).getByText(operator),
    'signed in as the operator',
  );

  // An operator may not create keys.
  await open('Keys');
  await see(page.getByText('Creating and revoking keys needs the admin role'), 'the keys page says why');
  check(
    (await page.getByRole('button', { name: 'Create key' }).count()) === 0,
    'no key creation for an operator',
  );

  // An admin resets the operator's second factor: the key alone signs in again.
  await page.getByRole('button', { name: 'Sign out' }).click();
  await signIn(adminKey);
  await open('Account');
  await see(operatorRow().getByText('on', { exact: true }), "the operator's second factor on");
  page.once('dialog', (d) => d.accept());
  await operatorRow().getByRole('button', { name: `Reset the second factor of ${operator}` }).click();
  await see(
    page.getByRole('status').getByText(`${operator} signs in with their key alone`),
    'the reset done',
  );
  await see(operatorRow().getByText('off', { exact: true }), "the operator's second factor off");
  await screenshot('account');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await signIn(operatorKey);
  await see(
    page.getByRole('navigation', { name: 'Console' }).getByText(operator),
    'the operator signed in without a code',
  );
  check(pageErrors.length === 0, `no script errors in the page: ${pageErrors.join('; ')}`);
} catch (e) {
  const dir = process.env.QM_FAILURE_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'qm-console-e2e-'));
  fs.mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: path.join(dir, 'failure.png'), fullPage: true }).catch(() => undefined);
  fs.writeFileSync(path.join(dir, 'failure.html'), await page.content().catch(() => ''));
  console.error(`FAILED: [${step}] ${e.message}\n(screenshot and page HTML in ${dir})`);
  await browser.close();
  process.exit(1);
}
await browser.close();
console.log(`console e2e: ${checks} passed, 0 failed`);
