// Browser test: an attended transfer between two browser agents. Agent A (EXTENSION) answers the
// customer's call, clicks "Consult first" (the customer is held, A calls EXTENSION_B through the
// PBX), and once the consultation is up clicks "Complete transfer" (REFER with Replaces). Agent B
// (EXTENSION_B) answers the PBX's leg in a second page. The harness plays the PBX with SIPp.
// Steps (STEPS=1): `registered`; waits `invite-sent`; A answers: `talking-a`; waits
// `consult-ready`; A consults: `consulting`; waits `b-invited`; B answers: `talking-b`; A completes:
// `transferred`; B's call ends: `ended`.
import { cfg, say, hear, withBrowser, secondAgent, answerOnA, join, waitStats } from './lib.mjs';

const agentB = secondAgent();

await withBrowser('attended', async (context) => {
  const { a, b } = await answerOnA(context, agentB);
  await hear('consult-ready');
  await a.getByTestId('transfer-target').fill(agentB.ext);
  await a.getByTestId('consult').click();
  await a.locator('[data-testid="call-panel"][data-state="held"]').waitFor({ timeout: cfg.waitMs });
  await a.locator('[data-testid="consult-state"][data-state="talking"]').waitFor({ timeout: cfg.waitMs });
  say('consulting');
  await hear('b-invited');
  await b.locator('[data-testid="call-panel"][data-state="ringing"]').waitFor({ timeout: cfg.waitMs });
  await b.getByTestId('answer').click();
  await b.locator('[data-testid="call-panel"][data-state="talking"]').waitFor({ timeout: cfg.waitMs });
  say('talking-b', await waitStats(b, (s) => s.dtls === 'connected'));
  await a.screenshot({ path: join(cfg.artifacts, 'attended-a-consulting.png') });
  await a.getByTestId('complete').click();
  await a.locator('[data-testid="call-panel"]:is([data-state="transferred"], [data-state="ended"])').waitFor({ timeout: cfg.waitMs });
  say('transferred');
  await b.locator('[data-testid="call-panel"][data-state="ended"]').waitFor({ timeout: cfg.waitMs * 2 });
  say('ended');
});
