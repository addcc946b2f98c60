// Browser test with SIP.js (npm `sip.js`, issue 16) beside the widget's JsSIP: SIP.js's ES modules
// (from node_modules) and `sipjs-phone.js` are loaded as a module script into callgate's widget page,
// served by playwright's routing under `<callgate>/sipjs-test/` (callgate serves no such files). So the
// page is a real one from callgate's address, its WebSocket passes callgate's Origin check like the
// widget's own, and SIP.js runs under the widget's CSP (scripts from 'self' only; the widget's JsSIP
// stays idle: nobody logs in). Agent EXTENSION (and EXTENSION_B, when set, in a second page)
// registers with the password the admin API issued, at callgate's `/sip`. Then the harness drives
// it (STEPS=1), one line per step: `<a|b> <verb> [arg]`, answered by `<verb>: <json>`:
//   answer (waits for the ringing call), stats (audio flowing both ways: two samples),
//   `stats dtls` (DTLS up only: for a PBX that sends no RTP), hold, unhold, refer <extension>,
//   hangup, wait-ended (the other side hangs up), `event <prefix>` (waits for the page to see it);
// and `done` to close the browser. The first line printed is `registered: {a, b, api, version}`.
import { readFileSync, existsSync } from 'node:fs';
import { dirname, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cfg, env, say, withBrowser, registration, waitStats, join } from './lib.mjs';
import { nextLine } from './harness.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const sipjsLib = join(here, 'node_modules/sip.js/lib');
const prefix = '/sipjs-test/';
const agents = { a: { ext: cfg.ext, password: cfg.password } };
if (process.env.EXTENSION_B) { agents.b = { ext: env('EXTENSION_B'), password: env('PASSWORD_B') }; }

/** `sipjs-phone.js` and SIP.js's modules under `<callgate>/sipjs-test/` (404 for anything else). */
function file(path) {
  const name = path === 'phone.js' ? join(here, 'sipjs-phone.js') : path.startsWith('sip.js/') ? normalize(join(sipjsLib, path.slice(7))) : null;
  if (!name || !name.startsWith(here) || !existsSync(name)) { return { status: 404, body: 'not found' }; }
  return { body: readFileSync(name, 'utf8'), contentType: 'text/javascript' };
}

async function openPhone(context, { ext, password }) {
  const page = await context.newPage();
  // A document from callgate itself: one made up by playwright's routing would count as a public
  // page, and Chromium's Local Network Access checks would block its WebSocket to 127.0.0.1.
  const resp = await page.goto(`${cfg.base}/widget/`, { timeout: cfg.waitMs });
  if (!resp || resp.status() !== 200) { throw new Error(`GET /widget/: ${resp && resp.status()}`); }
  await page.addScriptTag({ url: `${cfg.base}${prefix}phone.js`, type: 'module' });
  await page.waitForFunction(() => window.phone, null, { timeout: cfg.waitMs });
  const server = cfg.base.replace(/^http/, 'ws') + '/sip';
  const reg = await page.evaluate((o) => window.phone.register(o), { server, aor: `sip:${ext}@${cfg.domain}`, user: ext, password });
  return { page, reg };
}

/** One step: the verb's result. */
async function step(page, verb, arg) {
  const call = (fn, a) => page.evaluate(([f, x]) => window.phone[f](x), [fn, a]);
  switch (verb) {
    case 'answer': return call('answer');
    case 'hold': return call('hold', true);
    case 'unhold': return call('hold', false);
    case 'refer': return call('refer', `sip:${arg}@${cfg.domain}`);
    case 'hangup': await call('hangup'); return page.evaluate(() => window.__pcs.map((pc) => pc.connectionState));
    case 'wait-ended': await call('waitEnded', cfg.waitMs * 2); return page.evaluate(() => window.__pcs.map((pc) => pc.connectionState));
    case 'event': return call('waitEvent', arg);
    case 'stats': {
      if (arg === 'dtls') { return waitStats(page, (s) => s.dtls === 'connected'); }
      const first = await waitStats(page, (s) => s.inbound && s.outbound && s.inbound.packets > 0 && s.outbound.packets > 0 && s.dtls === 'connected');
      const second = await waitStats(page, (s) => s.inbound && first && first.inbound && s.inbound.packets > first.inbound.packets + 10
        && s.outbound && first.outbound && s.outbound.packets > first.outbound.packets + 10);
      return { first, second };
    }
    default: throw new Error(`unknown step ${verb}`);
  }
}

// RUN names the page log and failure screenshot in the artifacts (`sipjs-<RUN>.log`).
await withBrowser(`sipjs-${env('RUN', 'run')}`, async (context) => {
  await context.route(`${cfg.base}${prefix}**`, (route) => route.fulfill(file(new URL(route.request().url()).pathname.slice(prefix.length))));
  const phones = {};
  const registered = {};
  for (const [name, agent] of Object.entries(agents)) {
    phones[name] = await openPhone(context, agent);
    registered[name] = phones[name].reg;
  }
  registered.api = await registration();
  registered.version = await phones.a.page.evaluate(() => window.phone.version);
  say('registered', registered);
  for (let i = 0; i < 50; i += 1) {
    const line = await nextLine('step');
    if (line === 'done') { return; }
    const [who, verb, arg] = line.split(' ');
    if (!phones[who]) { throw new Error(`no phone ${who}`); }
    say(verb, await step(phones[who].page, verb, arg));
  }
  throw new Error('too many steps');
});
