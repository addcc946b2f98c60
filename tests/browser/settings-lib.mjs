// Shared by the settings-page browser scripts (tests/it/settings_page.rs runs them): environment,
// Debian Chromium through playwright-core (same launch flags as lib.mjs), a line protocol with the
// Rust harness (`<tag>: <json>` on stdout; with STEPS=1 the script waits for the harness's line on
// stdin between steps), checks, and screenshots into ARTIFACTS.
import { mkdirSync, writeFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined || v === '') { console.error(`${name} is not set`); process.exit(2); }
  return v;
};

export const cfg = {
  base: env('CALLGATE_URL'),
  token: env('CALLGATE_TOKEN'),
  artifacts: env('ARTIFACTS', 'target/browser-artifacts'),
  chromium: env('CHROMIUM', '/usr/bin/chromium'),
  locale: env('LOCALE', 'en-US'),
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
/** Waits (bounded) for the harness to send `expected`; returns at once without STEPS=1. */
export async function hear(expected) {
  if (!cfg.steps) { return; }
  const got = lines.length ? lines.shift() : await new Promise((resolve, reject) => {
    waiters.push(resolve);
    setTimeout(() => reject(new Error(`no "${expected}" from the harness`)), cfg.waitMs * 2);
  });
  if (got !== expected) { throw new Error(`harness said ${JSON.stringify(got)}, expected ${JSON.stringify(expected)}`); }
}

/** Throws with `what` (and the values) unless `ok`. */
export function check(ok, what, ...values) {
  if (!ok) { throw new Error(`check failed: ${what}${values.length ? ` ${JSON.stringify(values)}` : ''}`); }
}

/** `actual` must equal `expected` (JSON comparison). */
export function same(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) { throw new Error(`${what}: got ${a}, expected ${e}`); }
}

export const shot = (target, name) => target.screenshot({ path: join(cfg.artifacts, `settings-${name}.png`) });

/**
 * Runs `body(page, log)` in a fresh headless Chromium (fresh profile, `cfg.locale`), then exits:
 * 0 when it resolved, 1 (page log and `<name>-failure.png`) when it threw, 3 on the overall timeout.
 * Page errors and console errors fail the run too.
 */
export async function withPage(name, body) {
  const watchdog = setTimeout(() => { console.error(`${name}: overall timeout`); process.exit(3); }, cfg.waitMs * 8);
  if (!existsSync(cfg.chromium)) { console.error(`${name}: no Chromium at ${cfg.chromium} (apt-get install chromium)`); process.exit(2); }
  mkdirSync(cfg.artifacts, { recursive: true });
  rmSync(join(cfg.artifacts, `${name}-failure.png`), { force: true });
  const profile = mkdtempSync(join(tmpdir(), 'callgate-chromium-'));
  const log = [];
  const errors = [];
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: cfg.chromium,
    headless: true,
    locale: cfg.locale,
    viewport: { width: 1200, height: 900 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  context.setDefaultTimeout(cfg.waitMs);
  const page = context.pages()[0] || await context.newPage();
  page.on('console', (m) => {
    log.push(`[console.${m.type()}] ${m.text()}`);
    // The 401s and 422s the scripts provoke on purpose are logged by Chromium as failed loads.
    if (m.type() === 'error' && !/^Failed to load resource: the server responded with a status of 4\d\d/.test(m.text())) { errors.push(m.text()); }
  });
  page.on('pageerror', (e) => { log.push(`[pageerror] ${e.message}`); errors.push(e.message); });
  page.on('request', (r) => { if (r.url().includes('/api/')) { log.push(`[>] ${r.method()} ${r.url()}`); } });
  page.on('response', (r) => { if (r.url().includes('/api/')) { log.push(`[<] ${r.status()} ${r.url()}`); } });
  let failed = null;
  try {
    await body(page, log);
    check(errors.length === 0, 'no page or console errors', errors);
  } catch (e) {
    failed = e;
    await page.screenshot({ path: join(cfg.artifacts, `${name}-failure.png`), fullPage: true }).catch(() => {});
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

/** Opens `/` (which redirects to the page) and signs in with `token`; resolves on the settings view. */
export async function signIn(page, token = cfg.token) {
  const resp = await page.goto(`${cfg.base}/`);
  check(resp && resp.status() === 200, 'GET / answers with the page', resp && resp.status());
  check(new URL(page.url()).pathname === '/settings/', '/ redirects to /settings/', page.url());
  await page.getByTestId('login-view').waitFor();
  await page.getByTestId('login-token').fill(token);
  await page.getByTestId('login-submit').click();
  await page.getByTestId('settings-view').waitFor();
}

export { join };
