// Shared by the browser test scripts: environment, Debian Chromium through playwright-core, the
// widget login, the admin API, and a line protocol with the Rust harness (tests/it/browser.rs):
// a script prints `<tag>: <json>` lines on stdout and, when STEPS=1, waits for the harness's lines
// on stdin between steps (so the harness can check the gateway while the page is still open).
import { mkdirSync, writeFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

export const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined || v === '') { console.error(`${name} is not set`); process.exit(2); }
  return v;
};

export const cfg = {
  base: env('CALLGATE_URL'),
  token: env('CALLGATE_TOKEN'),
  portal: env('PORTAL_ID'),
  ext: env('EXTENSION'),
  password: env('PASSWORD'),
  domain: env('SIP_DOMAIN'),
  artifacts: env('ARTIFACTS', 'target/browser-artifacts'),
  chromium: env('CHROMIUM', '/usr/bin/chromium'),
  waitMs: Number(process.env.WAIT_MS || 15000),
  steps: process.env.STEPS === '1',
};

/** Prints one protocol line for the harness. */
export function say(tag, value) { console.log(`${tag}: ${JSON.stringify(value ?? null)}`); }

const lines = [];
const waiters = [];
if (cfg.steps) {
  createInterface({ input: process.stdin }).on('line', (l) => {
    const w = waiters.shift();
    if (w) { w(l.trim()); } else { lines.push(l.trim()); }
  });
}
/** Waits for the harness to send `expected` (only with STEPS=1; else returns at once). */
export async function hear(expected) {
  if (!cfg.steps) { return; }
  const got = lines.length ? lines.shift() : await new Promise((resolve, reject) => {
    waiters.push(resolve);
    setTimeout(() => reject(new Error(`no "${expected}" from the harness`)), cfg.waitMs * 2);
  });
  if (got !== expected) { throw new Error(`harness said ${JSON.stringify(got)}, expected ${JSON.stringify(expected)}`); }
}

export async function agents() {
  const r = await fetch(`${cfg.base}/api/v1/portals/${cfg.portal}/agents`, { headers: { authorization: `Bearer ${cfg.token}` } });
  if (r.status !== 200) { throw new Error(`GET agents: ${r.status} ${await r.text()}`); }
  return r.json();
}

/** Waits until the admin API lists `cfg.ext`'s registration; returns it. */
export async function registration() {
  const deadline = Date.now() + cfg.waitMs;
  for (;;) {
    const entry = (await agents()).find((a) => a.extension === cfg.ext);
    if (entry && entry.registration) { return entry.registration; }
    if (Date.now() > deadline) { throw new Error(`agents API shows no registration: ${JSON.stringify(entry)}`); }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Runs `body(context, log)` in a fresh headless Chromium (fresh profile, fake media devices),
 * then exits: 0 when it resolved, 1 (with the page log and a screenshot `<name>-failure.png`)
 * when it threw, 3 on the overall timeout.
 */
export async function withBrowser(name, body) {
  const watchdog = setTimeout(() => { console.error(`${name}: overall timeout`); process.exit(3); }, cfg.waitMs * 4);
  if (!existsSync(cfg.chromium)) { console.error(`${name}: no Chromium at ${cfg.chromium} (apt-get install chromium)`); process.exit(2); }
  mkdirSync(cfg.artifacts, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), 'callgate-chromium-'));
  const log = [];
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: cfg.chromium,
    headless: true,
    locale: 'en-US',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream'],
  });
  context.on('page', (page) => {
    page.on('console', (m) => log.push(`[console.${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => log.push(`[pageerror] ${e.message}`));
    page.on('websocket', (ws) => {
      log.push(`[ws open] ${ws.url()}`);
      ws.on('framesent', (f) => log.push(`[ws >] ${String(f.payload).split('\r\n')[0]}`));
      ws.on('framereceived', (f) => log.push(`[ws <] ${String(f.payload).split('\r\n')[0]}`));
      ws.on('close', () => log.push('[ws close]'));
    });
  });
  let failed = null;
  try {
    await body(context, log);
  } catch (e) {
    failed = e;
    for (const p of context.pages()) { await p.screenshot({ path: join(cfg.artifacts, `${name}-failure.png`) }).catch(() => {}); }
  } finally {
    writeFileSync(join(cfg.artifacts, `${name}.log`), log.join('\n') + '\n');
    await context.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
    clearTimeout(watchdog);
  }
  if (failed) {
    console.error(`${name}: FAILED: ${failed.stack || failed}`);
    console.error(log.slice(-40).join('\n'));
    process.exit(1);
  }
  console.log(`${name}: ok`);
  process.exit(0);
}

/** Opens the widget in a new page and logs in as `cfg.ext`; resolves once it shows "registered". */
export async function login(context) {
  const page = await context.newPage();
  const resp = await page.goto(`${cfg.base}/widget/`, { timeout: cfg.waitMs });
  if (!resp || resp.status() !== 200) { throw new Error(`GET /widget/: ${resp && resp.status()}`); }
  const status = page.getByTestId('status');
  await status.waitFor({ timeout: cfg.waitMs });
  if (await status.getAttribute('data-state') !== 'unregistered') { throw new Error('page did not start unregistered'); }
  const wsDefault = await page.getByTestId('login-ws-url').inputValue();
  const expectedWs = cfg.base.replace(/^http/, 'ws') + '/sip';
  if (wsDefault !== expectedWs) { throw new Error(`ws URL default ${wsDefault}, expected ${expectedWs}`); }
  await page.getByTestId('login-extension').fill(cfg.ext);
  await page.getByTestId('login-password').fill(cfg.password);
  await page.getByTestId('login-domain').fill(cfg.domain);
  await page.getByTestId('login-submit').click();
  // Registered, or fail fast on an error state (a wrong password shows "Error: Authentication Error").
  await page.locator('[data-testid="status"]:is([data-state="registered"], [data-state="error"])').waitFor({ timeout: cfg.waitMs });
  const text = await status.textContent();
  if (await status.getAttribute('data-state') !== 'registered' || !/Registered/.test(text)) {
    throw new Error(`the page did not register: status ${JSON.stringify(text)}`);
  }
  return page;
}

export { join };
