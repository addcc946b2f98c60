// Shared by every browser test script (widget: lib.mjs; settings page: settings-lib.mjs): the
// environment they all need, Debian Chromium through playwright-core, and a line protocol with the
// Rust harness (tests/it/common/node.rs): a script prints `<tag>: <json>` lines on stdout and, when
// STEPS=1, waits for the harness's lines on stdin between steps (so the harness can check the
// gateway while the page is still open).
import { mkdirSync, writeFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

/** The environment variable `name` (or `fallback`); exits 2 when it is unset or empty. */
export const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined || v === '') { console.error(`${name} is not set`); process.exit(2); }
  return v;
};

/** What every script needs; lib.mjs and settings-lib.mjs extend it with their own. */
export const cfg = {
  base: env('CALLGATE_URL'),
  token: env('CALLGATE_TOKEN'),
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
/** The harness's next line (bounded: `waitMs * 2`; only with STEPS=1); `what` names it in the error. */
export async function nextLine(what = 'line') {
  return lines.length ? lines.shift() : new Promise((resolve, reject) => {
    waiters.push(resolve);
    setTimeout(() => reject(new Error(`no ${what} from the harness`)), cfg.waitMs * 2);
  });
}

/** Waits (bounded) for the harness to send `expected` (only with STEPS=1; else returns at once). */
export async function hear(expected) {
  if (!cfg.steps) { return; }
  const got = await nextLine(`"${expected}"`);
  if (got !== expected) { throw new Error(`harness said ${JSON.stringify(got)}, expected ${JSON.stringify(expected)}`); }
}

/** Chromium flags of every script (headless in a container, nothing talking to Google). */
export const chromiumArgs = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync'];

/**
 * Runs `body(context, log)` in a fresh headless Chromium (fresh profile; `launch` adds to or
 * overrides the launch options, `args` default to `chromiumArgs`), then exits: 0 when it resolved,
 * 1 (with the end of the page log and `failureShot(context, path)`, by default a screenshot of
 * every page to `<name>-failure.png`) when it threw, 3 when it took longer than `timeoutMs`.
 * `log` is written to `<name>.log` in the artifacts either way.
 */
export async function inChromium(name, { timeoutMs, launch = {}, failureShot }, body) {
  const watchdog = setTimeout(() => { console.error(`${name}: overall timeout`); process.exit(3); }, timeoutMs);
  if (!existsSync(cfg.chromium)) { console.error(`${name}: no Chromium at ${cfg.chromium} (apt-get install chromium)`); process.exit(2); }
  mkdirSync(cfg.artifacts, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), 'callgate-chromium-'));
  const log = [];
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: cfg.chromium,
    headless: true,
    args: chromiumArgs,
    ...launch,
  });
  let failed = null;
  try {
    await body(context, log);
  } catch (e) {
    failed = e;
    const path = join(cfg.artifacts, `${name}-failure.png`);
    if (failureShot) {
      await failureShot(context, path).catch(() => {});
    } else {
      for (const p of context.pages()) { await p.screenshot({ path }).catch(() => {}); }
    }
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

export { join };
