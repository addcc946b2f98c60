// Shared by the widget's browser test scripts (tests/it/browser.rs runs them): their environment,
// the widget login, the admin API, and Chromium set up for calls; the environment every script
// needs, the line protocol with the Rust harness and the browser launch come from harness.mjs.
import { cfg as base, env, say, hear, chromiumArgs, inChromium, join } from './harness.mjs';

export { env, say, hear, join };

export const cfg = {
  ...base,
  portal: env('PORTAL_ID'),
  ext: env('EXTENSION'),
  password: env('PASSWORD'),
  domain: env('SIP_DOMAIN'),
};

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
  const launch = {
    locale: 'en-US',
    args: [...chromiumArgs, '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      // Media tests: candidates on loopback (the only interface here) and audio really played out.
      '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required'],
    ignoreDefaultArgs: ['--mute-audio'],
  };
  await inChromium(name, { timeoutMs: cfg.waitMs * 4, launch }, async (context, log) => {
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
    await body(context, log);
  });
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

/** Agent B of the two-agent scripts: EXTENSION_B and PASSWORD_B (exits 2 when one is unset). */
export function secondAgent() {
  return { ext: env('EXTENSION_B'), password: env('PASSWORD_B') };
}

/**
 * The opening of the two-agent scripts: A (`cfg.ext`) and B (`agentB`, from `secondAgent()`) log in;
 * prints `registered`, waits `invite-sent`, and A answers the ringing call; prints `talking-a`.
 * Resolves to both pages, `{ a, b }`.
 */
export async function answerOnA(context, agentB) {
  const a = await login(context);
  const b = await login(context, agentB.ext, agentB.password);
  say('registered');
  await hear('invite-sent');
  await a.locator('[data-testid="call-panel"][data-state="ringing"]').waitFor({ timeout: cfg.waitMs });
  await a.getByTestId('answer').click();
  await a.locator('[data-testid="call-panel"][data-state="talking"]').waitFor({ timeout: cfg.waitMs });
  say('talking-a');
  return { a, b };
}


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
