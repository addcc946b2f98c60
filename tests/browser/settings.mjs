// The settings page end to end (issue 7), English: sign in; add a portal's credentials; fill every
// setting; activation without default responsibles shows the API's errors next to those fields;
// activate; reload and find everything; hints on hover; add, edit, delete and import mappings;
// add, edit and delete lines with static UTM tags;
// edit and delete credentials through the gear; the calls view's empty state; 401 and log out.
// The harness (tests/it/settings_page.rs) checks the gateway through the admin API between steps:
//   prints `portal: {id}`            waits `portal-checked`
//   prints `errors: {...}`           waits `errors-checked`
//   prints `saved: {...}`            waits `saved-checked`
//   prints `mappings: {...}`         waits `mappings-checked`
//   prints `lines: {...}`            waits `lines-checked`
//   prints `credentials: {...}`      waits `credentials-checked`
import { cfg, say, hear, check, same, shot, withPage, signIn } from './settings-lib.mjs';

const webhook = process.env.WEBHOOK_URL;
const secret = process.env.WEBHOOK_SECRET;
check(webhook && secret && webhook.includes(secret), 'WEBHOOK_URL and WEBHOOK_SECRET are set');

await withPage('settings', async (page) => {
  const id = (x) => page.getByTestId(x);
  const field = (path) => id(`field-${path}`);

  // ---- sign in: a wrong token is refused and not kept ----------------------------------------
  const resp = await page.goto(`${cfg.base}/`);
  check(resp.status() === 200 && new URL(page.url()).pathname === '/settings/', '/ redirects to the page', page.url());
  await id('login-view').waitFor();
  await shot(page, 'login');
  await id('login-token').fill('not-the-admin-token');
  await id('login-submit').click();
  await page.locator('[data-testid="login-error"]:not(:empty)').waitFor();
  same(await id('login-error').textContent(), 'This token is not accepted.', 'wrong token message');
  same(await page.evaluate(() => sessionStorage.length), 0, 'a refused token is not stored');
  await id('login-token').fill(cfg.token);
  await id('login-submit').click();
  await id('portal-empty').waitFor();
  same(await id('login-token').inputValue(), '', 'the token field is emptied');
  await shot(page, 'empty');
  check(!(await page.content()).includes(cfg.token), 'the token is nowhere in the page');

  // ---- add credentials: domain required, then a webhook portal ---------------------------------
  await id('portal-add-first').click();
  await id('cred-dialog').waitFor();
  same(await id('cred-title').textContent(), 'Add credentials', 'dialog title');
  await id('cred-save').click();
  await page.locator('[data-testid="cred-error-domain"]:not(:empty)').waitFor();
  same(await id('cred-error-domain').textContent(), 'Domain is required', 'the API names the missing domain');
  await id('cred-name').fill('Main office');
  await id('cred-domain').fill('https://office.bitrix24.ru/');
  await id('cred-kind').selectOption('webhook');
  await id('cred-webhook').fill(webhook);
  await shot(page, 'add-credentials');
  await id('cred-save').click();
  await id('cred-dialog').waitFor({ state: 'hidden' });
  await id('settings-form').waitFor();
  same(await id('picker-label').textContent(), 'Main office — https://office.bitrix24.ru/', 'picker shows the new portal');
  const masked = await id('sum-auth').textContent();
  check(masked.includes('/rest/1/***/') && !masked.includes(secret), 'the webhook is shown masked', masked);
  check(!(await page.content()).includes(secret), 'the webhook secret is nowhere in the page');
  const portal = Number(await id('settings-form').getAttribute('data-portal'));
  say('portal', { id: portal });
  await hear('portal-checked');

  // ---- defaults as the API gave them -----------------------------------------------------------
  same(await field('active').isChecked(), false, 'integration off by default');
  check(await id('active-note').isVisible(), 'the note about the off state is shown');
  same(await id('active-note').getAttribute('class'), 'note warn', 'the note stands out while off');
  same(await id('utm-row').isVisible(), false, 'UTM choice hidden while CallTracking is off');

  // ---- fill every setting; activate without default responsibles -------------------------------
  await field('active').check();
  same(await id('active-note').getAttribute('class'), 'note', 'the note is quiet while on');
  await field('telephony_mode').selectOption('webrtc');
  await field('pbx_host').fill('127.0.0.1:5090');
  await field('trusted_pbx').fill('127.0.0.1\n10.20.0.0/16');
  await field('sip_domains').fill('pbx.office.example');
  await field('correlation_header').fill('X-Pbx-Call');
  await field('routing_user').fill('route-me');
  await field('min_talk_seconds').fill('5');
  await field('incoming.forward_to_personal_manager').uncheck();
  await field('incoming.create_entity').uncheck();
  await field('incoming.default_responsible').fill('');
  await field('incoming.assign_responsible_to').selectOption('last');
  await field('outgoing.create_entity').check();
  await field('outgoing.default_responsible').fill('');
  await field('other.calltracking').check();
  await id('utm-row').waitFor();
  await field('other.calltracking').uncheck();
  await id('utm-row').waitFor({ state: 'hidden' });
  await field('other.calltracking').check();
  await id('utm-utm_content').uncheck();
  await id('utm-utm_term').uncheck();
  await field('other.chat_message').uncheck();
  same(await id('save-status').textContent(), 'Unsaved changes', 'edits are flagged');
  await id('settings-save').click();
  await page.locator('[data-testid="save-status"][data-kind="error"]').waitFor();
  const errors = {
    incoming: await id('error-incoming.default_responsible').textContent(),
    outgoing: await id('error-outgoing.default_responsible').textContent(),
    incomingInvalid: await field('incoming.default_responsible').getAttribute('aria-invalid'),
    outgoingInvalid: await field('outgoing.default_responsible').getAttribute('aria-invalid'),
    status: await id('save-status').textContent(),
    others: await page.locator('[data-error-for]:not(:empty)').count(),
  };
  same(errors.incoming, 'Is required to activate the integration', 'error next to the incoming default responsible');
  same(errors.outgoing, 'Is required to activate the integration', 'error next to the outgoing default responsible');
  same([errors.incomingInvalid, errors.outgoingInvalid], ['true', 'true'], 'both fields are marked');
  same(errors.others, 2, 'no other field has an error');
  check(await id('error-incoming.default_responsible').isVisible(), 'the error is visible');
  await id('block-incoming').screenshot({ path: `${cfg.artifacts}/settings-errors-incoming.png` });
  await id('block-outgoing').screenshot({ path: `${cfg.artifacts}/settings-errors-outgoing.png` });
  say('errors', errors);
  await hear('errors-checked');

  // ---- a value the page itself refuses, then the responsibles: saved ------------------------------
  await field('incoming.default_responsible').fill('eleven');
  await id('settings-save').click();
  await page.locator('[data-testid="error-incoming.default_responsible"]:has-text("Enter a whole number.")').waitFor();
  await field('incoming.default_responsible').fill('11');
  await field('outgoing.default_responsible').fill('12');
  await id('settings-save').click();
  await page.locator('[data-testid="save-status"][data-kind="ok"]').waitFor();
  same(await id('save-status').textContent(), 'Saved.', 'saved');
  same(await page.locator('[data-error-for]:not(:empty)').count(), 0, 'the errors are gone');
  same(await id('portal-option-' + portal).locator('.badge').textContent(), 'active', 'the picker shows the portal active');
  say('saved', { portal });
  await hear('saved-checked');

  // ---- reload: everything persisted ------------------------------------------------------------------
  const expected = {
    active: true, telephony_mode: 'webrtc', pbx_host: '127.0.0.1:5090', trusted_pbx: '127.0.0.1\n10.20.0.0/16',
    sip_domains: 'pbx.office.example', correlation_header: 'X-Pbx-Call', routing_user: 'route-me', min_talk_seconds: '5',
    'incoming.forward_to_personal_manager': false, 'incoming.create_entity': false, 'incoming.default_responsible': '11',
    'incoming.assign_responsible_to': 'last', 'outgoing.create_entity': true, 'outgoing.default_responsible': '12',
    'other.calltracking': true, 'other.chat_message': false,
  };
  const read = async () => {
    const out = {};
    for (const k of Object.keys(expected)) {
      const f = field(k);
      out[k] = (await f.getAttribute('type')) === 'checkbox' ? await f.isChecked() : await f.inputValue();
    }
    out.utm = await page.locator('[data-testid="utm-tags"] input:checked').evaluateAll((l) => l.map((c) => c.value));
    return out;
  };
  await page.reload();
  await page.locator(`[data-testid="settings-form"][data-portal="${portal}"]`).waitFor();
  same(await read(), { ...expected, utm: ['utm_source', 'utm_medium', 'utm_campaign'] }, 'after a reload');
  check(await id('utm-row').isVisible(), 'UTM choice shown while CallTracking is on');
  same(await id('picker-label').textContent(), 'Main office — https://office.bitrix24.ru/', 'same portal after a reload');

  // ---- cancel reverts unsaved edits --------------------------------------------------------------------
  await field('pbx_host').fill('10.9.9.9:5060');
  await field('other.chat_message').check();
  await id('settings-cancel').click();
  same(await field('pbx_host').inputValue(), '127.0.0.1:5090', 'cancel restores the saved text');
  same(await field('other.chat_message').isChecked(), false, 'cancel restores the saved toggle');

  // ---- leaving unsaved edits asks first: dismissed, the edits stay; accepted, they are dropped --------
  const asked = [];
  const answer = (accept) => new Promise((resolve) => page.once('dialog', async (d) => {
    asked.push(d.message());
    await (accept ? d.accept() : d.dismiss());
    resolve();
  }));
  await field('routing_user').fill('not-saved');
  let answered = answer(false);
  await id('nav-calls').click();
  await answered;
  await page.waitForFunction((p) => location.hash === `#/settings/${p}`, portal);
  check(await id('settings-form').isVisible(), 'still on the settings');
  same(await field('routing_user').inputValue(), 'not-saved', 'the edit is kept');
  answered = answer(true);
  await id('nav-calls').click();
  await answered;
  await id('calls-view').waitFor();
  same(asked, Array(2).fill('The settings have unsaved changes. Leave and discard them?'), 'asked both times');
  await id('nav-settings').click();
  await page.locator(`[data-testid="settings-form"][data-portal="${portal}"]`).waitFor();
  same(await field('routing_user').inputValue(), 'route-me', 'the discarded edit is gone');

  // ---- a hint appears on hover -------------------------------------------------------------------------
  const hint = id('hint-active');
  const tip = hint.locator('.tip');
  same(await tip.isVisible(), false, 'no tooltip before hovering');
  await hint.hover();
  await tip.waitFor({ state: 'visible' });
  check((await tip.textContent()).startsWith('Turns the whole integration'), 'the hint explains the toggle', await tip.textContent());
  await shot(page, 'hint');
  await page.mouse.move(5, 5);
  await tip.waitFor({ state: 'hidden' });
  // Every toggle and required select has one.
  for (const f of ['telephony_mode', 'incoming.forward_to_personal_manager', 'incoming.create_entity', 'incoming.default_responsible',
    'incoming.assign_responsible_to', 'outgoing.create_entity', 'outgoing.default_responsible', 'other.calltracking', 'other.chat_message']) {
    const text = await id(`hint-${f}`).locator('.tip').textContent();
    check(text.length > 20 && text.endsWith('.'), `a one-sentence hint for ${f}`, text);
  }

  // ---- mappings: add, refuse a bad one, edit, delete -----------------------------------------------------
  await id('mappings-empty').waitFor();
  await id('mapping-add').click();
  await id('mapping-form').waitFor();
  await id('mapping-user').fill('21');
  await id('mapping-extension').fill('1 01');
  await id('mapping-contact').fill('http://nope');
  await id('mapping-save').click();
  await page.locator('[data-testid="mapping-error-extension"]:not(:empty)').waitFor();
  same(await id('mapping-error-extension').textContent(), 'Must be 1-32 characters: digits, letters, * # + _ . -', 'extension error from the API');
  same(await id('mapping-error-contact').textContent(), 'Must be a SIP URI such as sip:101@10.0.0.5:5060', 'contact error from the API');
  await shot(id('block-mappings'), 'mapping-errors');
  await id('mapping-extension').fill('201');
  await id('mapping-contact').fill('sip:201@127.0.0.1:5070');
  await id('mapping-pm').uncheck();
  await id('mapping-save').click();
  await id('mapping-form').waitFor({ state: 'hidden' });
  const row21 = page.locator('[data-testid^="mapping-row-"][data-user="21"]');
  await row21.waitFor();
  same(await row21.locator('td').allTextContents(), ['21', '201', 'no', 'sip:201@127.0.0.1:5070', 'EditDelete'], 'the new row');
  const mid = (await row21.getAttribute('data-testid')).replace('mapping-row-', '');
  await id(`mapping-edit-${mid}`).click();
  same(await id('mapping-extension').inputValue(), '201', 'the form holds the row');
  await id('mapping-extension').fill('202');
  await id('mapping-contact').fill('');
  await id('mapping-pm').check();
  await id('mapping-save').click();
  await page.locator(`[data-testid="mapping-row-${mid}"] td[data-col="extension"]:has-text("202")`).waitFor();
  same(await row21.locator('td').allTextContents(), ['21', '202', 'yes', '—', 'EditDelete'], 'the edited row');
  await id(`mapping-delete-${mid}`).click();
  same(await id(`mapping-delete-${mid}`).textContent(), 'Confirm', 'delete asks first');
  await id(`mapping-delete-${mid}`).click();
  await row21.waitFor({ state: 'detached' });
  await id('mappings-empty').waitFor();

  // ---- import from Bitrix24 (the fake's users 11, 12, 13 have extensions; 1 has none) ----------------
  await id('mapping-add').click();
  await id('mapping-user').fill('12');
  await id('mapping-extension').fill('102');
  await id('mapping-save').click();
  await page.locator('[data-testid^="mapping-row-"][data-user="12"]').waitFor();
  await id('mapping-import').click();
  await page.locator('[data-testid="import-result"][data-kind="ok"]').waitFor();
  const imported = await id('import-result').textContent();
  check(imported.startsWith('Imported 2 mapping(s) from Bitrix24; 2 user(s) skipped.'), 'import summary', imported);
  check(imported.includes('user 1: no extension') && imported.includes('user 12: already mapped'), 'skip reasons', imported);
  await page.locator('[data-testid^="mapping-row-"][data-user="13"]').waitFor();
  const table = await page.locator('#mappings-body tr').evaluateAll((rows) => rows.map((r) => [...r.querySelectorAll('td')].slice(0, 3).map((c) => c.textContent)));
  same(table, [['11', '101', 'yes'], ['12', '102', 'yes'], ['13', '103', 'yes']], 'mappings after the import');
  say('mappings', { rows: table });
  await hear('mappings-checked');
  // The mapped users are offered for the default responsibles.
  same(await page.locator('#users-list option').evaluateAll((o) => o.map((x) => x.value)), ['11', '12', '13'], 'responsible suggestions');

  // ---- lines with static UTM tags: refused, added, edited; a second added and deleted ------------------
  await id('lines-empty').waitFor();
  await id('line-add').click();
  await id('line-number').fill('not a number');
  await id('line-save').click();
  await page.locator('[data-testid="line-error-number"]:not(:empty)').waitFor();
  same(await id('line-error-number').textContent(), 'Must be a phone number such as +7 495 123-45-67', 'number error from the API');
  await id('line-number').fill('+7 (495) 123-45-67');
  await id('line-utm_source').fill('google');
  await id('line-utm_campaign').fill('spring');
  await id('line-save').click();
  const line = id('line-row-74951234567');
  await line.waitFor();
  same(await line.locator('.chip').allTextContents(), ['utm_source=google', 'utm_campaign=spring'], 'the line, normalised, with its tags');
  await id('line-edit-74951234567').click();
  same(await id('line-number').getAttribute('readonly'), '', 'the number is the key: fixed while editing');
  await id('line-utm_source').fill('yandex');
  await id('line-save').click();
  await line.locator('.chip:has-text("utm_source=yandex")').waitFor();
  await id('line-add').click();
  await id('line-number').fill('8 812 000-00-00');
  await id('line-save').click();
  await id('line-row-78120000000').waitFor();
  same(await id('line-row-78120000000').locator('td[data-col="utm"]').textContent(), '—', 'a line without tags');
  await id('line-delete-78120000000').click();
  await id('line-delete-78120000000').click();
  await id('line-row-78120000000').waitFor({ state: 'detached' });
  say('lines', { rows: await page.locator('#lines-body tr').count() });
  await hear('lines-checked');

  // ---- screenshots of every block -------------------------------------------------------------------
  await page.evaluate(() => { document.getElementById('toast').hidden = true; }); // a passing toast, not the page
  for (const b of ['credentials', 'integration', 'incoming', 'outgoing', 'other', 'mappings', 'lines']) {
    await id(`block-${b}`).screenshot({ path: `${cfg.artifacts}/settings-${b}.png` });
  }
  await page.screenshot({ path: `${cfg.artifacts}/settings-page.png`, fullPage: true });

  // ---- credentials through the gear: rename (secret kept), a second portal added and deleted ------------
  await id('portal-picker').click();
  await id(`portal-gear-${portal}`).click();
  await id('cred-dialog').waitFor();
  same(await id('cred-title').textContent(), 'Edit credentials', 'gear opens the edit dialog');
  same(await id('cred-name').inputValue(), 'Main office', 'name filled in');
  same(await id('cred-webhook').inputValue(), '', 'the webhook secret is not filled in');
  check((await id('cred-webhook-stored').textContent()).includes('/rest/1/***/'), 'the stored webhook is shown masked');
  same(await id('cred-delete').isVisible(), true, 'delete offered when editing');
  await shot(page, 'edit-credentials');
  await id('cred-name').fill('Head office');
  await id('cred-save').click();
  await id('cred-dialog').waitFor({ state: 'hidden' });
  await page.locator('[data-testid="picker-label"]:has-text("Head office")').waitFor();
  // The gear beside the picker edits the current portal too; Escape closes without saving.
  await id('portal-edit').click();
  await id('cred-dialog').waitFor();
  same(await id('cred-name').inputValue(), 'Head office', 'the current portal in the dialog');
  await page.keyboard.press('Escape');
  await id('cred-dialog').waitFor({ state: 'hidden' });

  await id('portal-picker').click();
  await id('portal-add').click();
  await id('cred-domain').fill('branch.bitrix24.ru');
  await id('cred-kind').selectOption('oauth');
  await id('cred-client-id').fill('local.0123456789abcd.12345678');
  await id('cred-client-secret').fill('oauth-secret-value-42');
  await id('cred-save').click();
  await id('cred-dialog').waitFor({ state: 'hidden' });
  await page.locator(`[data-testid="settings-form"]:not([data-portal="${portal}"])`).waitFor();
  same(await id('picker-label').textContent(), 'https://branch.bitrix24.ru/', 'the picker shows the new portal by its domain');
  same(await id('sum-name').textContent(), '(no name)', 'the name is optional');
  check(!(await page.content()).includes('oauth-secret-value-42'), 'the client secret is nowhere in the page');
  same(await field('active').isChecked(), false, 'the new portal starts inactive');
  await id('mappings-empty').waitFor();
  const second = Number(await id('settings-form').getAttribute('data-portal'));
  check(second !== portal, 'a second portal', second);
  await id('portal-picker').click();
  same(await page.locator('[data-testid="portal-list"] li').count(), 2, 'two portals listed');
  await shot(page, 'picker');
  await id(`portal-gear-${second}`).click();
  same(await id('cred-client-secret').inputValue(), '', 'the client secret is not filled in');
  await id('cred-delete').click();
  same(await id('cred-delete').textContent(), 'Click again to delete', 'delete asks first');
  await id('cred-delete').click();
  await id('cred-dialog').waitFor({ state: 'hidden' });
  await page.locator(`[data-testid="settings-form"][data-portal="${portal}"]`).waitFor();
  same(await id('picker-label').textContent(), 'Head office — https://office.bitrix24.ru/', 'back on the remaining portal');
  say('credentials', { portal, deleted: second });
  await hear('credentials-checked');

  // ---- calls view: empty --------------------------------------------------------------------------
  await id('nav-calls').click();
  await id('calls-empty').waitFor();
  same(await id('calls-empty').textContent(), 'No calls yet.', 'empty calls view');
  await shot(page, 'calls-empty');

  // ---- a token that stops working returns to the login form; log out forgets the token ---------------
  await page.evaluate(() => sessionStorage.setItem('callgate.adminToken', 'revoked-token-0000000000'));
  await id('calls-refresh').click();
  await id('login-view').waitFor();
  same(await id('login-error').textContent(), 'The session has ended; sign in again.', '401 returns to the login');
  same(await page.evaluate(() => sessionStorage.getItem('callgate.adminToken')), null, 'the bad token is dropped');
  await id('login-token').fill(cfg.token);
  await id('login-submit').click();
  await id('calls-view').waitFor();
  await id('logout').click();
  await id('login-view').waitFor();
  same(await page.evaluate(() => sessionStorage.length), 0, 'log out clears the session');
  same(await page.locator('#mappings-body tr').count(), 0, 'no mappings left in the page');
  same(await field('pbx_host').inputValue(), '', 'no settings left in the page');
  check(!(await page.content()).includes('office.bitrix24.ru'), 'no portal left in the page');
});
