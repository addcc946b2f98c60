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
      '--disable-component-update', '--disable-sync', '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      // Media tests: candidates on loopback (the only interface here) and audio really played out.
      '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required'],
    ignoreDefaultArgs: ['--mute-audio'],
  });
  // Every RTCPeerConnection the page makes, for getStats() from the scripts.
  await context.addInitScript(() => {
    const Native = window.RTCPeerConnection;
    if (!Native) { return; }
    window.__pcs = [];
    const Wrapped = function (...args) { const pc = new Native(...args); window.__pcs.push(pc); return pc; };
    Wrapped.prototype = Native.prototype;
    Object.setPrototypeOf(Wrapped, Native);
    window.RTCPeerConnection = Wrapped;
  });
  context.on('page', (page) => {
    page.on('console', (m) => log.push(`[console.${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => log.push(`[pageerror] ${e.message}`));
    page.on('websocket', (ws) => {
      log.push(`[ws open] ${ws.url()}`);
      // WS_LOG=full: whole SIP messages (SDP included) instead of their first lines.
      const cut = (p) => (process.env.WS_LOG === 'full' ? String(p) : String(p).split('\r\n')[0]);
      ws.on('framesent', (f) => log.push(`[ws >] ${cut(f.payload)}`));
      ws.on('framereceived', (f) => log.push(`[ws <] ${cut(f.payload)}`));
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

/**
 * Opens the widget in a new page and logs in as `ext` (default `cfg.ext`) with `password`;
 * resolves once it shows "registered".
 */
export async function login(context, ext = cfg.ext, password = cfg.password) {
  const page = await context.newPage();
  const resp = await page.goto(`${cfg.base}/widget/`, { timeout: cfg.waitMs });
  if (!resp || resp.status() !== 200) { throw new Error(`GET /widget/: ${resp && resp.status()}`); }
  const status = page.getByTestId('status');
  await status.waitFor({ timeout: cfg.waitMs });
  if (await status.getAttribute('data-state') !== 'unregistered') { throw new Error('page did not start unregistered'); }
  const wsDefault = await page.getByTestId('login-ws-url').inputValue();
  const expectedWs = cfg.base.replace(/^http/, 'ws') + '/sip';
  if (wsDefault !== expectedWs) { throw new Error(`ws URL default ${wsDefault}, expected ${expectedWs}`); }
  await page.getByTestId('login-extension').fill(ext);
  await page.getByTestId('login-password').fill(password);
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

/**
 * The audio stats of the page's newest RTCPeerConnection: inbound/outbound packets, codecs,
 * DTLS state (null before there is one).
 */
export async function audioStats(page) {
  return page.evaluate(async () => {
    const pcs = window.__pcs || [];
    const pc = pcs[pcs.length - 1];
    if (!pc) { return null; }
    const report = await pc.getStats();
    const codecs = {};
    report.forEach((s) => { if (s.type === 'codec') { codecs[s.id] = s.mimeType; } });
    const out = { inbound: null, outbound: null, dtls: null, srtpCipher: null, pair: null, connection: pc.connectionState };
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        out.inbound = { packets: s.packetsReceived, bytes: s.bytesReceived, codec: codecs[s.codecId] || null, energy: s.totalAudioEnergy || 0 };
      }
      if (s.type === 'outbound-rtp' && s.kind === 'audio') {
        out.outbound = { packets: s.packetsSent, bytes: s.bytesSent, codec: codecs[s.codecId] || null };
      }
      if (s.type === 'transport') { out.dtls = s.dtlsState; out.srtpCipher = s.srtpCipher || null; }
      if (s.type === 'candidate-pair' && s.nominated) { out.pair = s.state; }
    });
    return out;
  });
}

/** Polls audioStats until `ok(stats)` (bounded by cfg.waitMs); the last stats either way. */
export async function waitStats(page, ok) {
  const deadline = Date.now() + cfg.waitMs;
  let last = null;
  while (Date.now() < deadline) {
    last = await audioStats(page);
    if (last && ok(last)) { return last; }
    await new Promise((r) => setTimeout(r, 250));
  }
  return last;
}
