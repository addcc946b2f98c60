// Browser test: callgate's widget page in headless Debian Chromium registers agent EXTENSION with
// the password the admin API issued, and the admin API lists the registration with JsSIP's
// User-Agent. Also: Russian labels for a Russian browser. Env: see lib.mjs. With STEPS=1 it prints
// `registered: <the API's registration>` and waits for `checked` before closing the page.
import { cfg, say, hear, registration, withBrowser, login, join } from './lib.mjs';

await withBrowser('register', async (context) => {
  const page = await login(context);
  const reg = await registration();
  if (!/^JsSIP /.test(reg.user_agent || '') || reg.transport !== 'ws') {
    throw new Error(`unexpected registration ${JSON.stringify(reg)}`);
  }
  await page.screenshot({ path: join(cfg.artifacts, 'register.png') });
  say('registered', reg);
  await hear('checked');

  // Russian labels for a Russian browser (a persistent context has one locale: override the page's).
  const ru = await context.newPage();
  await ru.addInitScript(() => Object.defineProperty(navigator, 'language', { get: () => 'ru-RU' }));
  await ru.goto(`${cfg.base}/widget/`, { timeout: cfg.waitMs });
  const label = await ru.getByTestId('login-submit').textContent();
  if (label !== 'Войти') { throw new Error(`Russian label ${JSON.stringify(label)}`); }
  await ru.screenshot({ path: join(cfg.artifacts, 'register-ru.png') });
});
