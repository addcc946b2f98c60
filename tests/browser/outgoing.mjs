// Browser test: a browser agent calls out through callgate (the PBX is SIPp answering with
// -rtp_echo), talks with media both ways, holds and resumes (re-INVITEs through the media
// anchor), and hangs up. Steps (STEPS=1): prints `registered`, waits `pbx-ready`; dials DIAL and
// prints `talking` and `stats`; holds: prints `held`; resumes: prints `resumed`; waits
// `hang-up`, hangs up and prints `ended`.
import { cfg, env, say, hear, registration, withBrowser, login, join, waitStats } from './lib.mjs';

const number = env('DIAL');

await withBrowser('outgoing', async (context) => {
  const page = await login(context);
  say('registered', await registration());
  await hear('pbx-ready');
  await page.getByTestId('dial-number').fill(number);
  await page.getByTestId('dial').click();
  await page.locator('[data-testid="call-panel"][data-state="talking"]').waitFor({ timeout: cfg.waitMs });
  say('talking');
  const first = await waitStats(page, (s) => s.inbound && s.outbound && s.inbound.packets > 0 && s.outbound.packets > 0 && s.dtls === 'connected');
  const second = await waitStats(page, (s) => s.inbound && first && first.inbound && s.inbound.packets > first.inbound.packets + 10
    && s.outbound && first.outbound && s.outbound.packets > first.outbound.packets + 10);
  say('stats', { first, second });
  // The panel changes at once; the offer/answer is done when the transceiver's negotiated
  // direction is (sendonly on hold, sendrecv again after resuming).
  const negotiated = (dir) => page.waitForFunction((d) => {
    const pcs = window.__pcs || [];
    const pc = pcs[pcs.length - 1];
    return !!pc && pc.getTransceivers().some((t) => t.currentDirection === d);
  }, dir, { timeout: cfg.waitMs });
  await page.getByTestId('hold').click();
  await page.locator('[data-testid="call-panel"][data-state="held"]').waitFor({ timeout: cfg.waitMs });
  await negotiated('sendonly');
  await page.screenshot({ path: join(cfg.artifacts, 'outgoing-held.png') });
  say('held');
  await page.getByTestId('hold').click();
  await page.locator('[data-testid="call-panel"][data-state="talking"]').waitFor({ timeout: cfg.waitMs });
  await negotiated('sendrecv');
  say('resumed');
  // DTMF as SIP INFO through callgate to the PBX.
  await page.getByTestId('dtmf-digits').fill('5');
  await page.getByTestId('dtmf').click();
  say('dtmf-sent');
  await hear('hang-up');
  await page.getByTestId('hangup').click();
  await page.locator('[data-testid="call-panel"][data-state="ended"]').waitFor({ timeout: cfg.waitMs });
  say('ended');
});
