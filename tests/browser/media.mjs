// Browser test with media: a PBX call (SIPp sending G.711 RTP) rings in the widget, the page
// answers, and audio flows both ways through callgate's media anchor. The harness plays the PBX.
// Steps (STEPS=1): prints `registered`, waits `invite-sent`; answers and prints `talking`;
// prints `stats: {...}` once packets flow both ways; then, with HANGUP=browser, waits `hang-up`,
// clicks "Hang up" and prints `ended`; with HANGUP=close it waits `close` and closes the tab; with HANGUP=pbx it waits for the call to end by itself and
// prints `ended`.
import { cfg, say, hear, registration, withBrowser, login, join, waitStats } from './lib.mjs';

const mode = process.env.HANGUP || 'browser';

await withBrowser(`media-${mode}`, async (context) => {
  const page = await login(context);
  say('registered', await registration());
  await hear('invite-sent');
  await page.locator('[data-testid="call-panel"][data-state="ringing"]').waitFor({ timeout: cfg.waitMs });
  await page.getByTestId('answer').click();
  await page.locator('[data-testid="call-panel"][data-state="talking"]').waitFor({ timeout: cfg.waitMs });
  say('talking');
  const first = await waitStats(page, (s) => s.inbound && s.outbound && s.inbound.packets > 0 && s.outbound.packets > 0 && s.dtls === 'connected');
  // A second look a moment later: the counters keep growing (media flows, not just a burst).
  const second = await waitStats(page, (s) => s.inbound && first && first.inbound && s.inbound.packets > first.inbound.packets + 10
    && s.outbound && first.outbound && s.outbound.packets > first.outbound.packets + 10);
  await page.screenshot({ path: join(cfg.artifacts, `media-${mode}-talking.png`) });
  say('stats', { first, second });
  if (mode === 'close') {
    // The browser vanishes mid-call (tab closed): no BYE from it; callgate must hang up for it.
    await hear('close');
    await page.close();
    say('ended', []);
    return;
  }
  if (mode === 'browser') {
    await hear('hang-up');
    await page.getByTestId('hangup').click();
  }
  await page.locator('[data-testid="call-panel"][data-state="ended"]').waitFor({ timeout: cfg.waitMs * 2 });
  say('ended', await page.evaluate(() => (window.__pcs || []).map((pc) => pc.connectionState)));
});
