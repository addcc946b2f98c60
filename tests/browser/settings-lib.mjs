// Shared by the settings-page browser scripts (tests/it/settings_page.rs runs them): the page's
// locale, checks, screenshots into ARTIFACTS, and Chromium set up for the page; the environment,
// the line protocol with the Rust harness and the browser launch come from harness.mjs (the
// widget's variables of lib.mjs are not needed here).
import { rmSync } from 'node:fs';
import { cfg as base, env, say, hear, inChromium, join } from './harness.mjs';

export { say, hear, join };

export const cfg = {
  ...base,
  locale: env('LOCALE', 'en-US'),
};

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
  rmSync(join(cfg.artifacts, `${name}-failure.png`), { force: true });
  const options = {
    timeoutMs: cfg.waitMs * 8,
    launch: { locale: cfg.locale, viewport: { width: 1200, height: 900 } },
    failureShot: async (context, path) => context.pages()[0].screenshot({ path, fullPage: true }),
  };
  await inChromium(name, options, async (context, log) => {
    const errors = [];
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
    await body(page, log);
    check(errors.length === 0, 'no page or console errors', errors);
  });
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
