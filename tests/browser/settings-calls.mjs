// The settings page in Russian (locale ru-RU) and its calls view: the blocks and hints carry
// Russian labels; the call CALL_ID (made by the harness through the edge proxy) is listed with its
// legs, first and last talker and the responsible with its reason; a click shows its details.
// The API's activation error shows in Russian next to its field, and Cancel undoes the edits.
// Steps: prints `call: {...}` (what the page shows), waits `call-checked`.
import { cfg, say, hear, check, same, shot, withPage, signIn } from './settings-lib.mjs';

const callId = Number(process.env.CALL_ID);
const legs = Number(process.env.LEGS);
check(callId > 0 && legs > 0, 'CALL_ID and LEGS are set');

await withPage('settings-calls', async (page) => {
  const id = (x) => page.getByTestId(x);
  same(await page.evaluate(() => navigator.language), 'ru-RU', 'the browser speaks Russian');
  await signIn(page);
  same(await page.evaluate(() => document.documentElement.lang), 'ru', 'the page picked Russian');
  await id('settings-form').waitFor();

  // Russian labels on every block, the note, a select and the buttons.
  const headings = await page.locator('[data-testid^="block-"] h2').allTextContents();
  same(headings, ['Учетные данные', 'Параметры интеграции', 'Входящие', 'Исходящие', 'Прочее', 'Сопоставления сотрудников',
    'Линии и статические UTM-метки'], 'block titles');
  same(await page.locator('label[for="f-active"]').textContent(), 'Интеграция активна', 'the toggle label');
  check((await id('active-note').textContent()).startsWith('Пока интеграция выключена'), 'the note in Russian');
  same(await id('field-telephony_mode').locator('option').allTextContents(), ['Использовать WebRTC виджет', 'Использовать IP телефонию'], 'telephony modes');
  same(await id('field-incoming.assign_responsible_to').locator('option').allTextContents(), ['Первого разговаривающего', 'Последнего разговаривающего'], 'assign choices');
  same([await id('settings-save').textContent(), await id('settings-cancel').textContent()], ['Сохранить', 'Отменить'], 'buttons');
  same(await id('mapping-import').textContent(), 'Импорт из Bitrix24', 'import button');
  const hint = id('hint-incoming.forward_to_personal_manager');
  await hint.hover();
  await hint.locator('.tip').waitFor({ state: 'visible' });
  check((await hint.locator('.tip').textContent()).startsWith('При сценарном звонке'), 'a Russian hint on hover');
  await shot(page, 'ru');

  // The API's validation message, in Russian, next to the field it names; Cancel undoes it all.
  await id('field-active').check();
  await id('field-incoming.default_responsible').fill('');
  await id('settings-save').click();
  await page.locator('[data-testid="error-incoming.default_responsible"]:not(:empty)').waitFor();
  same(await id('error-incoming.default_responsible').textContent(), 'Обязательно для включения интеграции', 'the API error in Russian');
  same(await page.locator('[data-error-for]:not(:empty)').count(), 1, 'only the missing responsible is named');
  same(await id('save-status').textContent(), 'Некоторые поля нужно исправить; см. сообщения рядом с ними.', 'the save bar says so');
  await id('block-incoming').screenshot({ path: `${cfg.artifacts}/settings-ru-errors.png` });
  await id('settings-cancel').click();
  same(await id('field-incoming.default_responsible').inputValue(), '1', 'cancel restores the responsible');
  same(await id('field-active').isChecked(), false, 'cancel restores the toggle');
  same(await page.locator('[data-error-for]:not(:empty)').count(), 0, 'cancel clears the errors');
  await id('block-incoming').screenshot({ path: `${cfg.artifacts}/settings-ru-incoming.png` });

  // The calls view.
  await id('nav-calls').click();
  const row = id(`call-row-${callId}`);
  await row.waitFor();
  same(await id('calls-empty').isVisible(), false, 'no empty-state text beside a call');
  same(await page.locator('#calls-table th').allTextContents(),
    ['Начало', 'Тип', 'Клиент', 'Плечи', 'Первый разговаривавший', 'Последний разговаривавший', 'Ответственный', 'Итог'], 'column titles');
  const shown = {
    legs: await row.locator('td[data-col="legs"] .chip').allTextContents(),
    first: await row.locator('td[data-col="first"]').textContent(),
    last: await row.locator('td[data-col="last"]').textContent(),
    responsible: await row.locator('td[data-col="responsible"] div').allTextContents(),
    outcome: await row.locator('td[data-col="outcome"]').textContent(),
  };
  await shot(page, 'calls');
  await row.click();
  await id('call-details').waitFor();
  same(await id('call-title').textContent(), `Звонок №${callId}`, 'details title');
  await page.locator('[data-testid="call-leg"]').first().waitFor();
  shown.detailLegs = await page.locator('[data-testid="call-leg"]').count();
  shown.detailConversations = await page.locator('[data-testid="call-conversation"]').count();
  same(shown.detailLegs, legs, 'every leg in the details');
  check(page.url().endsWith(`#/calls/${callId}`), 'the details have their own address', page.url());
  await shot(page, 'call-details');
  await id('call-details').screenshot({ path: `${cfg.artifacts}/settings-call-details-card.png` });
  say('call', shown);
  await hear('call-checked');

  // A reload keeps the details open (the address says which call).
  await page.reload();
  await id('call-title').waitFor();
  same(await id('call-title').textContent(), `Звонок №${callId}`, 'details after a reload');
});
