// Browser test (signalling only): a PBX INVITE for EXTENSION reaches the widget page through
// callgate and the page shows the caller; the PBX's CANCEL ends it. The harness plays the PBX.
// Steps (STEPS=1): prints `registered`, waits `invite-sent`; prints `ringing: {number, text}`,
// waits `cancelled`; prints `ended`.
import { cfg, say, hear, registration, withBrowser, login, join } from './lib.mjs';

await withBrowser('incoming', async (context) => {
  const page = await login(context);
  say('registered', await registration());
  await hear('invite-sent');
  await page.locator('[data-testid="call-panel"][data-state="ringing"]').waitFor({ timeout: cfg.waitMs });
  const caller = page.getByTestId('caller');
  const ringing = { number: await caller.getAttribute('data-number'), text: await caller.textContent(),
    answerEnabled: await page.getByTestId('answer').isEnabled() };
  await page.screenshot({ path: join(cfg.artifacts, 'incoming-ringing.png') });
  say('ringing', ringing);
  await hear('cancelled');
  await page.locator('[data-testid="call-panel"][data-state="ended"]').waitFor({ timeout: cfg.waitMs });
  await page.screenshot({ path: join(cfg.artifacts, 'incoming-ended.png') });
  say('ended');
});
