// Browser test: a blind transfer between two browser agents. Agent A (EXTENSION) answers the
// PBX's call and transfers it to agent B (EXTENSION_B) with the widget's transfer button; the PBX
// (SIPp) follows the REFER and calls B, who answers in a second page. The harness plays the PBX.
// Steps (STEPS=1): prints `registered` (both pages), waits `invite-sent`; A answers, prints
// `talking-a`; A transfers to B, prints `transferred`; waits `b-invited`; B answers, prints
// `talking-b` with B's audio stats; then waits for B's call to end and prints `ended`.
import { cfg, say, hear, withBrowser, secondAgent, answerOnA, join, waitStats } from './lib.mjs';

const agentB = secondAgent();

await withBrowser('transfer', async (context) => {
  const { a, b } = await answerOnA(context, agentB);
  await a.getByTestId('transfer-target').fill(agentB.ext);
  await a.getByTestId('transfer').click();
  await a.locator('[data-testid="call-panel"]:is([data-state="transferred"], [data-state="ended"])').waitFor({ timeout: cfg.waitMs });
  await a.screenshot({ path: join(cfg.artifacts, 'transfer-a.png') });
  say('transferred');
  await hear('b-invited');
  await b.locator('[data-testid="call-panel"][data-state="ringing"]').waitFor({ timeout: cfg.waitMs });
  await b.getByTestId('answer').click();
  await b.locator('[data-testid="call-panel"][data-state="talking"]').waitFor({ timeout: cfg.waitMs });
  const stats = await waitStats(b, (s) => s.dtls === 'connected');
  await b.screenshot({ path: join(cfg.artifacts, 'transfer-b.png') });
  say('talking-b', stats);
  await b.locator('[data-testid="call-panel"][data-state="ended"]').waitFor({ timeout: cfg.waitMs * 2 });
  say('ended');
});
