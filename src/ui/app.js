// callgate settings page (issue 7): plain JS, no framework, no build step. Everything it shows
// comes from the admin API (/api/v1, same origin) with the admin token the operator typed, kept in
// sessionStorage and never rendered back. Data is put into the page with textContent only.
// Routes (location.hash): #/settings[/<portal id>], #/calls[/<call id>].
(() => {
  'use strict';

  // ---- language ------------------------------------------------------------------------------
  const ALL = window.CALLGATE_STRINGS;
  const lang = /^ru\b/i.test(navigator.language || '') ? 'ru' : 'en';
  const S = ALL[lang];
  const locale = lang === 'ru' ? 'ru-RU' : 'en-GB';
  const drift = Object.keys(ALL.en).filter((k) => !(k in ALL.ru)).concat(Object.keys(ALL.ru).filter((k) => !(k in ALL.en)));
  if (drift.length) { console.error(`i18n: keys in one language only: ${drift.join(', ')}`); }

  /** The string `key` in the page's language, `{name}` placeholders filled from `vars`. */
  function t(key, vars) {
    let s = S[key] ?? ALL.en[key] ?? key;
    for (const [k, v] of Object.entries(vars || {})) { s = s.split(`{${k}}`).join(String(v)); }
    return s;
  }

  document.documentElement.lang = lang;
  let hintSeq = 0;
  function applyI18n(root) {
    root.querySelectorAll('[data-i18n]').forEach((e) => { e.textContent = t(e.dataset.i18n); });
    root.querySelectorAll('[data-i18n-placeholder]').forEach((e) => { e.placeholder = t(e.dataset.i18nPlaceholder); });
    root.querySelectorAll('[data-i18n-title]').forEach((e) => { e.title = t(e.dataset.i18nTitle); e.setAttribute('aria-label', e.title); });
    // Hints: an "!" icon with a tooltip shown on hover and on keyboard focus (style.css).
    root.querySelectorAll('[data-hint]').forEach((e) => {
      const id = `tip-${++hintSeq}`;
      e.replaceChildren(el('span', { class: 'hint-icon', 'aria-hidden': 'true' }, '!'),
        el('span', { class: 'tip', role: 'tooltip', id }, t(e.dataset.hint)));
      e.setAttribute('aria-describedby', id);
      e.setAttribute('aria-label', t(e.dataset.hint));
    });
  }

  // ---- small DOM helpers ---------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);

  /** An element with attributes (`class`, `data-*`, `on*` handlers) and text or element children. */
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) { continue; }
      if (k.startsWith('on')) { e.addEventListener(k.slice(2), v); } else { e.setAttribute(k, v === true ? '' : String(v)); }
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined) { continue; }
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function getPath(obj, path) { return path.split('.').reduce((o, k) => (o == null ? undefined : o[k]), obj); }
  function setPath(obj, path, value) {
    const keys = path.split('.');
    const last = keys.pop();
    let o = obj;
    for (const k of keys) { if (typeof o[k] !== 'object' || o[k] === null) { o[k] = {}; } o = o[k]; }
    o[last] = value;
  }

  let toastTimer = null;
  function toast(text) {
    const e = $('toast');
    e.textContent = text;
    e.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { e.hidden = true; }, 3000);
  }

  const fmtTime = (ms) => (ms == null ? t('nobody') : new Date(ms).toLocaleString(locale, { dateStyle: 'short', timeStyle: 'medium' }));
  const fmtClock = (ms) => (ms == null ? t('nobody') : new Date(ms).toLocaleTimeString(locale, { timeStyle: 'medium' }));

  // ---- the admin API -------------------------------------------------------------------------
  const TOKEN_KEY = 'callgate.adminToken';
  const PORTAL_KEY = 'callgate.portal';
  const token = () => sessionStorage.getItem(TOKEN_KEY);

  class ApiFailure extends Error {
    constructor(status, body) {
      super((body && body.message) || `HTTP ${status}`);
      this.status = status;
      this.body = body;
    }
  }
  class SignedOut extends Error {}

  async function request(method, path, body, bearer) {
    const headers = { authorization: `Bearer ${bearer}`, accept: 'application/json' };
    if (body !== undefined) { headers['content-type'] = 'application/json'; }
    const r = await fetch(`/api/v1${path}`, { method, headers, cache: 'no-store', body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    let data = null;
    if (text) { try { data = JSON.parse(text); } catch (_) { data = { message: text }; } }
    return { status: r.status, ok: r.ok, data };
  }

  /** An admin API call; a 401 ends the session and shows the login form. */
  async function api(method, path, body) {
    const bearer = token();
    if (!bearer) { showLogin(); throw new SignedOut(); }
    const r = await request(method, path, body, bearer);
    if (r.status === 401) { signOut(t('loginExpired')); throw new SignedOut(); }
    if (!r.ok) { throw new ApiFailure(r.status, r.data); }
    return r.data;
  }

  /** Reports an unexpected failure (SignedOut needs nothing: the login form is up). */
  function failed(e, where) {
    if (e instanceof SignedOut) { return; }
    const text = t('requestFailed', { msg: e.message });
    if (where) { setStatus(where, text, 'error'); } else { toast(text); }
    console.warn(e);
  }

  // ---- login ---------------------------------------------------------------------------------
  function showOnly(view) {
    for (const v of ['login-view', 'settings-view', 'calls-view']) { $(v).hidden = v !== view; }
    const inside = view !== 'login-view';
    $('tabs').hidden = !inside;
    $('logout').hidden = !inside;
    $('nav-settings').classList.toggle('current', view === 'settings-view');
    $('nav-calls').classList.toggle('current', view === 'calls-view');
    document.querySelector('main').classList.toggle('wide', view === 'calls-view');
  }

  function showLogin(message) {
    closeCred();
    showOnly('login-view');
    $('login-token').value = '';
    $('login-error').textContent = message || '';
    $('login-token').focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    st.portals = []; st.settings = null; st.mappings = []; st.portalId = null; st.calls = [];
    $('mappings-body').replaceChildren(); $('calls-body').replaceChildren(); $('call-details').replaceChildren();
    form.reset(); form.hidden = true; setDirty(false); $('cred-summary').hidden = true; $('block-mappings').hidden = true;
    $('block-lines').hidden = true; $('lines-body').replaceChildren(); st.lines = [];
    ['sum-name', 'sum-domain', 'sum-auth', 'picker-label'].forEach((x) => { $(x).textContent = ''; });
    $('portal-list').replaceChildren(); $('users-list').replaceChildren();
    showLogin(message);
  }

  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const candidate = $('login-token').value.trim();
    $('login-token').value = '';
    if (!candidate) { return; }
    $('login-submit').disabled = true;
    try {
      const r = await request('GET', '/portals', undefined, candidate);
      if (r.status === 401) { $('login-error').textContent = t('loginWrong'); $('login-token').focus(); return; }
      if (!r.ok) { $('login-error').textContent = t('loginFailed', { msg: (r.data && r.data.message) || r.status }); return; }
      sessionStorage.setItem(TOKEN_KEY, candidate);
      $('login-error').textContent = '';
      route();
    } catch (e) {
      $('login-error').textContent = t('loginFailed', { msg: e.message });
    } finally {
      $('login-submit').disabled = false;
    }
  });
  $('logout').addEventListener('click', () => { signOut(''); history.replaceState(null, '', '#/settings'); });

  // ---- state and routing ---------------------------------------------------------------------
  const st = { portals: [], portalId: null, settings: null, mappings: [], editingMapping: null, credPortal: null, calls: [], seq: 0 };

  // Unsaved settings: leaving them (another portal, the calls view, a reload) asks first.
  let dirty = false;
  let shownHash = location.hash;
  function setDirty(on) { dirty = on; form.dataset.dirty = on ? '1' : ''; }
  window.addEventListener('beforeunload', (ev) => { if (dirty && token()) { ev.preventDefault(); ev.returnValue = ''; } });

  function route() {
    if (!token()) { showLogin(); return; }
    if (dirty && !confirm(t('discardChanges'))) {
      if (location.hash !== shownHash) { history.replaceState(null, '', shownHash); }
      return;
    }
    shownHash = location.hash;
    setDirty(false);
    const m = /^#\/(settings|calls)(?:\/(\d+))?/.exec(location.hash);
    const id = m && m[2] ? Number(m[2]) : null;
    if (m && m[1] === 'calls') { showCalls(id).catch((e) => failed(e)); } else { showSettings(id).catch((e) => failed(e)); }
  }
  window.addEventListener('hashchange', route);

  function go(hash) {
    if (location.hash === hash) { route(); } else { location.hash = hash; }
  }

  // ---- settings view -------------------------------------------------------------------------
  const form = $('settings-form');
  const INTEGER_FIELDS = new Set(['min_talk_seconds', 'incoming.default_responsible', 'outgoing.default_responsible']);
  const NULLABLE_FIELDS = new Set(['incoming.default_responsible', 'outgoing.default_responsible']);

  const portalLabel = (p) => (p.name ? `${p.name} — ${p.domain}` : p.domain);

  async function showSettings(wanted) {
    const seq = ++st.seq;
    // Nothing of the previous portal shows while this one loads.
    form.hidden = true;
    delete form.dataset.portal;
    $('block-mappings').hidden = true;
    $('block-lines').hidden = true;
    showOnly('settings-view');
    const portals = await api('GET', '/portals');
    if (seq !== st.seq) { return; }
    st.portals = portals;
    const known = (id) => portals.some((p) => p.id === id);
    const remembered = Number(localStorage.getItem(PORTAL_KEY));
    const id = known(wanted) ? wanted : known(remembered) ? remembered : (portals[0] && portals[0].id);
    const none = !portals.length;
    $('portal-empty').hidden = !none;
    $('picker').closest('.row').hidden = none;
    $('cred-summary').hidden = true;
    if (none) { st.portalId = null; renderPicker(); return; }
    st.portalId = id;
    localStorage.setItem(PORTAL_KEY, String(id));
    if (wanted !== id) { shownHash = `#/settings/${id}`; history.replaceState(null, '', shownHash); }
    renderPicker();
    const [settings, mappings, lines] = await Promise.all([api('GET', `/portals/${id}/settings`), api('GET', `/portals/${id}/mappings`),
      api('GET', `/portals/${id}/lines`)]);
    if (seq !== st.seq) { return; }
    st.settings = settings;
    st.mappings = mappings;
    st.lines = lines;
    renderSummary();
    fillForm(settings);
    setStatus('save-status', '', '');
    closeMappingForm();
    $('import-result').hidden = true;
    renderMappings();
    closeLineForm();
    renderLines();
    form.hidden = false;
    $('block-mappings').hidden = false;
    $('block-lines').hidden = false;
    form.dataset.portal = String(id);
  }

  function currentPortal() { return st.portals.find((p) => p.id === st.portalId); }

  function renderSummary() {
    const p = currentPortal();
    $('cred-summary').hidden = !p;
    if (!p) { return; }
    $('sum-name').textContent = p.name || t('unnamed');
    $('sum-domain').textContent = p.domain;
    let auth = t('noAuth');
    if (p.auth && p.auth.webhook_url) { auth = t('authWebhookShown', { url: p.auth.webhook_url }); }
    if (p.auth && p.auth.oauth) { auth = t('authOauthShown', { id: p.auth.oauth.client_id }); }
    $('sum-auth').textContent = auth;
  }

  function fillForm(s) {
    clearErrors(form);
    setDirty(false);
    form.querySelectorAll('[data-field]').forEach((e) => {
      const v = getPath(s, e.dataset.field);
      if (e.type === 'checkbox') { e.checked = !!v; } else if (Array.isArray(v)) { e.value = v.join('\n'); } else { e.value = v == null ? '' : String(v); }
    });
    const tags = new Set(getPath(s, 'other.utm_tags') || []);
    $('utm-tags').querySelectorAll('input').forEach((c) => { c.checked = tags.has(c.value); });
    syncDependent();
  }

  /** The UTM choice shows only while CallTracking is on; the "active" note stands out while off. */
  function syncDependent() {
    $('utm-row').hidden = !$('f-calltracking').checked;
    $('active-note').classList.toggle('warn', !$('f-active').checked);
  }

  /** The settings document from the form: the loaded one with the fields the page knows replaced. */
  function readForm() {
    const s = structuredClone(st.settings || {});
    const errors = [];
    form.querySelectorAll('[data-field]').forEach((e) => {
      const path = e.dataset.field;
      if (e.type === 'checkbox') { setPath(s, path, e.checked); return; }
      const raw = e.value.trim();
      if (path === 'trusted_pbx' || path === 'sip_domains') { setPath(s, path, raw.split(/[\s,;]+/).filter(Boolean)); return; }
      if (INTEGER_FIELDS.has(path)) {
        if (raw === '' && NULLABLE_FIELDS.has(path)) { setPath(s, path, null); return; }
        if (!/^\d{1,10}$/.test(raw)) { errors.push({ field: path, message: t('notInteger') }); return; }
        setPath(s, path, Number(raw));
        return;
      }
      setPath(s, path, raw);
    });
    setPath(s, 'other.utm_tags', [...$('utm-tags').querySelectorAll('input:checked')].map((c) => c.value));
    return { settings: s, errors };
  }

  const API_MESSAGES = { 'is required to activate the integration': 'api_required_to_activate' };
  function apiMessage(m) {
    const s = API_MESSAGES[m] ? t(API_MESSAGES[m]) : String(m || '');
    return s.charAt(0).toUpperCase() + s.slice(1);
  }

  function clearErrors(root) {
    root.querySelectorAll('[data-error-for]').forEach((e) => { e.replaceChildren(); });
    root.querySelectorAll('.invalid').forEach((e) => { e.classList.remove('invalid'); e.removeAttribute('aria-invalid'); });
  }

  /**
   * Puts every `{field, message}` next to the control it names (`trusted_pbx[1]` goes to
   * `trusted_pbx`); fields with no place of their own go to the `*` slot, else to `fallback`.
   * Returns how many found a place.
   */
  function showErrors(root, fields, fallback) {
    let first = null;
    let placed = 0;
    for (const f of fields || []) {
      const base = String(f.field).replace(/\[\d+\]$/, '');
      const slot = root.querySelector(`[data-error-for="${CSS.escape(f.field)}"]`) || root.querySelector(`[data-error-for="${CSS.escape(base)}"]`)
        || root.querySelector('[data-error-for="*"]');
      const text = slot && slot.dataset.errorFor === '*' ? `${f.field}: ${apiMessage(f.message)}` : apiMessage(f.message);
      if (!slot) { if (fallback) { fallback(text); } continue; }
      slot.append(el('div', {}, text));
      placed += 1;
      const control = root.querySelector(`[data-field="${CSS.escape(base)}"]`) || root.querySelector(`[data-error-control="${CSS.escape(base)}"]`);
      if (control) { control.classList.add('invalid'); control.setAttribute('aria-invalid', 'true'); first = first || control; }
    }
    if (first) { first.scrollIntoView({ block: 'center' }); first.focus({ preventScroll: true }); }
    return placed;
  }

  function setStatus(id, text, kind) {
    const e = $(id);
    e.textContent = text;
    e.dataset.kind = kind || '';
  }

  form.addEventListener('input', () => { setDirty(true); setStatus('save-status', t('unsaved'), 'dirty'); });
  form.addEventListener('change', syncDependent);
  $('settings-cancel').addEventListener('click', () => {
    if (!st.settings) { return; }
    fillForm(st.settings);
    setStatus('save-status', t('reverted'), '');
  });

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const id = st.portalId;
    clearErrors(form);
    const { settings, errors } = readForm();
    if (errors.length) { showErrors(form, errors); setStatus('save-status', t('fixFields'), 'error'); return; }
    setStatus('save-status', t('saving'), '');
    $('settings-save').disabled = true;
    try {
      const saved = await api('PUT', `/portals/${id}/settings`, settings);
      if (id !== st.portalId) { return; }
      st.settings = saved;
      const p = currentPortal();
      if (p) { p.active = saved.active; }
      renderPicker();
      fillForm(saved);
      setStatus('save-status', t('saved'), 'ok');
    } catch (e) {
      if (e instanceof ApiFailure && (e.status === 422 || e.status === 400)) {
        const extra = [];
        showErrors(form, e.body && e.body.fields, (text) => extra.push(text));
        setStatus('save-status', [t('fixFields'), ...extra].join(' '), 'error');
      } else { failed(e, 'save-status'); }
    } finally {
      $('settings-save').disabled = false;
    }
  });

  // ---- portal picker -------------------------------------------------------------------------
  function renderPicker() {
    const p = currentPortal();
    $('picker-label').textContent = p ? portalLabel(p) : t('choosePortal');
    $('portal-list').replaceChildren(...st.portals.map((q) => el('li', { role: 'option', 'aria-selected': q.id === st.portalId ? 'true' : 'false', 'data-testid': `portal-option-${q.id}`, class: q.id === st.portalId ? 'selected' : '' },
      el('button', { type: 'button', class: 'pick', 'data-testid': `portal-pick-${q.id}`, onclick: () => { closeMenu(); go(`#/settings/${q.id}`); } },
        el('span', { class: 'pick-name' }, q.name || q.domain),
        q.name ? el('span', { class: 'pick-domain' }, q.domain) : null,
        el('span', { class: `badge ${q.active ? 'on' : 'off'}` }, t(q.active ? 'stateActive' : 'stateInactive'))),
      el('button', { type: 'button', class: 'gear', 'data-testid': `portal-gear-${q.id}`, 'aria-label': t('gear', { name: q.name || q.domain }), onclick: () => { closeMenu(); openCred(q); } }, '⚙'))));
  }

  function closeMenu() { $('portal-menu').hidden = true; $('portal-picker').setAttribute('aria-expanded', 'false'); }
  $('portal-picker').addEventListener('click', () => {
    const open = $('portal-menu').hidden;
    $('portal-menu').hidden = !open;
    $('portal-picker').setAttribute('aria-expanded', String(open));
  });
  document.addEventListener('click', (ev) => { if (!$('picker').contains(ev.target)) { closeMenu(); } });
  document.addEventListener('keydown', (ev) => {
    if (ev.key !== 'Escape') { return; }
    closeMenu();
    if (!$('cred-dialog').hidden) { closeCred(); }
  });
  $('portal-add').addEventListener('click', () => { closeMenu(); openCred(null); });
  $('portal-add-first').addEventListener('click', () => openCred(null));
  $('portal-edit').addEventListener('click', () => { const p = currentPortal(); if (p) { openCred(p); } });

  // ---- credentials dialog ----------------------------------------------------------------------
  const credForm = $('cred-form');

  function openCred(p) {
    st.credPortal = p;
    clearErrors(credForm);
    $('cred-title').textContent = t(p ? 'editCredTitle' : 'addCredTitle');
    $('cred-name').value = (p && p.name) || '';
    $('cred-domain').value = (p && p.domain) || '';
    const auth = p && p.auth;
    const kind = auth && auth.webhook_url ? 'webhook' : auth && auth.oauth ? 'oauth' : 'none';
    $('cred-kind').value = kind;
    // The API keeps stored credentials when none are sent; it cannot drop them.
    $('cred-kind').querySelector('option[value="none"]').disabled = !!auth;
    $('cred-webhook').value = '';
    $('cred-webhook-stored').textContent = auth && auth.webhook_url ? t('storedWebhook', { url: auth.webhook_url }) : '';
    $('cred-client-id').value = (auth && auth.oauth && auth.oauth.client_id) || '';
    $('cred-client-secret').value = '';
    $('cred-secret-stored').textContent = auth && auth.oauth ? t('storedSecret') : '';
    $('cred-oauth-server').value = (auth && auth.oauth && auth.oauth.oauth_server) || '';
    $('cred-delete').hidden = !p;
    disarm($('cred-delete'), 'deleteCredentials');
    syncCredKind();
    $('cred-dialog').hidden = false;
    $('cred-name').focus();
  }

  function closeCred() { $('cred-dialog').hidden = true; st.credPortal = null; }
  function syncCredKind() {
    $('cred-webhook-fields').hidden = $('cred-kind').value !== 'webhook';
    $('cred-oauth-fields').hidden = $('cred-kind').value !== 'oauth';
  }
  $('cred-kind').addEventListener('change', syncCredKind);
  $('cred-cancel').addEventListener('click', closeCred);
  $('cred-dialog').addEventListener('mousedown', (ev) => { if (ev.target === $('cred-dialog')) { closeCred(); } });

  function credBody() {
    const p = st.credPortal;
    const stored = p && p.auth;
    const body = { name: $('cred-name').value.trim() || null, domain: $('cred-domain').value.trim() };
    const kind = $('cred-kind').value;
    if (kind === 'webhook') {
      const url = $('cred-webhook').value.trim();
      if (url || !(stored && stored.webhook_url)) { body.auth = { webhook_url: url }; }
    } else if (kind === 'oauth') {
      const secret = $('cred-client-secret').value.trim() || (stored && stored.oauth ? '***' : '');
      body.auth = { oauth: { client_id: $('cred-client-id').value.trim(), client_secret: secret, oauth_server: $('cred-oauth-server').value.trim() || null } };
    }
    return body;
  }

  credForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(credForm);
    const p = st.credPortal;
    $('cred-save').disabled = true;
    try {
      const saved = p ? await api('PUT', `/portals/${p.id}`, credBody()) : await api('POST', '/portals', credBody());
      closeCred();
      toast(t('portalSaved'));
      go(`#/settings/${saved.id}`);
    } catch (e) {
      if (e instanceof ApiFailure && e.body && e.body.fields && e.body.fields.length) { showErrors(credForm, e.body.fields); } else if (!(e instanceof SignedOut)) {
        $('cred-form').querySelector('[data-error-for="*"]').textContent = t('requestFailed', { msg: e.message });
      }
    } finally {
      $('cred-save').disabled = false;
    }
  });

  /** Two-click buttons: the first arms (asks to click again), the second acts. */
  function armed(button, confirmKey) {
    if (button.dataset.armed === '1') { return true; }
    button.dataset.armed = '1';
    button.textContent = t(confirmKey);
    button.classList.add('armed');
    return false;
  }
  function disarm(button, key) { button.dataset.armed = ''; button.textContent = t(key); button.classList.remove('armed'); }

  $('cred-delete').addEventListener('click', async () => {
    const p = st.credPortal;
    if (!p || !armed($('cred-delete'), 'confirmDelete')) { return; }
    try {
      await api('DELETE', `/portals/${p.id}`);
      closeCred();
      if (Number(localStorage.getItem(PORTAL_KEY)) === p.id) { localStorage.removeItem(PORTAL_KEY); }
      toast(t('portalDeleted'));
      go('#/settings');
    } catch (e) {
      if (!(e instanceof SignedOut)) { $('cred-form').querySelector('[data-error-for="*"]').textContent = t('requestFailed', { msg: e.message }); }
    }
  });

  // ---- employee mappings -----------------------------------------------------------------------
  const mappingForm = $('mapping-form');

  function renderMappings() {
    const rows = [...st.mappings].sort((a, b) => a.user_id - b.user_id).map((m) => el('tr', { 'data-testid': `mapping-row-${m.id}`, 'data-user': m.user_id },
      el('td', { 'data-col': 'user' }, String(m.user_id)),
      el('td', { 'data-col': 'extension' }, m.extension),
      el('td', { 'data-col': 'pm' }, el('span', { class: `badge ${m.use_for_personal_manager ? 'on' : 'off'}` }, t(m.use_for_personal_manager ? 'yes' : 'no'))),
      el('td', { 'data-col': 'contact', class: 'mono' }, m.contact || t('nobody')),
      el('td', { class: 'row-actions' },
        el('button', { type: 'button', class: 'btn btn-small', 'data-testid': `mapping-edit-${m.id}`, onclick: () => openMappingForm(m) }, t('edit')),
        el('button', { type: 'button', class: 'btn btn-small btn-danger-quiet', 'data-testid': `mapping-delete-${m.id}`, onclick: (ev) => deleteMapping(m, ev.currentTarget) }, t('delete')))));
    $('mappings-body').replaceChildren(...rows);
    $('mappings-empty').hidden = rows.length > 0;
    $('mappings-table').hidden = rows.length === 0;
    // Suggestions for the default responsibles: the mapped users.
    const users = [...new Map(st.mappings.map((m) => [m.user_id, m])).values()].sort((a, b) => a.user_id - b.user_id);
    $('users-list').replaceChildren(...users.map((m) => el('option', { value: m.user_id, label: t('userOption', { user: m.user_id, ext: m.extension }) })));
  }

  async function reloadMappings() {
    const id = st.portalId;
    const list = await api('GET', `/portals/${id}/mappings`);
    if (id === st.portalId) { st.mappings = list; renderMappings(); }
  }

  function openMappingForm(m) {
    st.editingMapping = m;
    clearErrors(mappingForm);
    $('mapping-form-title').textContent = m ? t('editMappingTitle', { user: m.user_id }) : t('addMappingTitle');
    $('m-user').value = m ? String(m.user_id) : '';
    $('m-ext').value = m ? m.extension : '';
    $('m-contact').value = (m && m.contact) || '';
    $('m-pm').checked = m ? m.use_for_personal_manager : true;
    mappingForm.hidden = false;
    $('m-user').focus();
  }
  function closeMappingForm() { mappingForm.hidden = true; st.editingMapping = null; }
  $('mapping-add').addEventListener('click', () => openMappingForm(null));
  $('mapping-cancel').addEventListener('click', closeMappingForm);

  mappingForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(mappingForm);
    const raw = $('m-user').value.trim();
    if (!/^\d{1,10}$/.test(raw)) { showErrors(mappingForm, [{ field: 'user_id', message: t('notInteger') }]); return; }
    const body = { user_id: Number(raw), extension: $('m-ext').value.trim(), use_for_personal_manager: $('m-pm').checked, contact: $('m-contact').value.trim() || null };
    const m = st.editingMapping;
    const id = st.portalId;
    $('mapping-save').disabled = true;
    try {
      if (m) { await api('PUT', `/portals/${id}/mappings/${m.id}`, body); } else { await api('POST', `/portals/${id}/mappings`, body); }
      closeMappingForm();
      toast(t('mappingSaved'));
      await reloadMappings();
    } catch (e) {
      if (e instanceof ApiFailure && e.body && e.body.fields && e.body.fields.length) { showErrors(mappingForm, e.body.fields); } else if (!(e instanceof SignedOut)) {
        mappingForm.querySelector('[data-error-for="*"]').textContent = t('requestFailed', { msg: e.message });
      }
    } finally {
      $('mapping-save').disabled = false;
    }
  });

  async function deleteMapping(m, button) {
    if (!armed(button, 'confirm')) { return; }
    try {
      await api('DELETE', `/portals/${st.portalId}/mappings/${m.id}`);
      if (st.editingMapping && st.editingMapping.id === m.id) { closeMappingForm(); }
      toast(t('mappingDeleted'));
      await reloadMappings();
    } catch (e) { failed(e); }
  }

  $('mapping-import').addEventListener('click', async () => {
    const button = $('mapping-import');
    const banner = $('import-result');
    button.disabled = true;
    banner.hidden = false;
    banner.dataset.kind = '';
    banner.textContent = t('importing');
    try {
      const r = await api('POST', `/portals/${st.portalId}/mappings/import`);
      const skipped = r.skipped || [];
      banner.dataset.kind = 'ok';
      banner.replaceChildren(el('div', {}, t('importDone', { created: (r.created || []).length, skipped: skipped.length })),
        skipped.length ? el('div', { class: 'small' }, skipped.map((s) => t('importSkipped', { user: s.user_id, reason: t(`skip_${String(s.reason).replace(/ /g, '_')}`) })).join('; ')) : null);
      await reloadMappings();
    } catch (e) {
      if (e instanceof SignedOut) { return; }
      banner.dataset.kind = 'error';
      const fields = (e.body && e.body.fields) || [];
      banner.textContent = fields.length ? fields.map((f) => apiMessage(f.message)).join(' ') : t('requestFailed', { msg: e.message });
    } finally {
      button.disabled = false;
    }
  });

  // ---- lines with static UTM tags ---------------------------------------------------------------
  const lineForm = $('line-form');
  const UTM = ['utm_source', 'utm_medium', 'utm_campaign', 'utm_content', 'utm_term'];

  function renderLines() {
    const rows = (st.lines || []).map((l) => el('tr', { 'data-testid': `line-row-${l.number}` },
      el('td', { class: 'mono', 'data-col': 'number' }, l.number),
      el('td', { 'data-col': 'utm' }, l.utm && Object.keys(l.utm).length
        ? el('div', { class: 'chips' }, UTM.filter((k) => l.utm[k] != null).map((k) => el('span', { class: 'chip' }, `${k}=${l.utm[k]}`)))
        : t('nobody')),
      el('td', { class: 'row-actions' },
        el('button', { type: 'button', class: 'btn btn-small', 'data-testid': `line-edit-${l.number}`, onclick: () => openLineForm(l) }, t('edit')),
        el('button', { type: 'button', class: 'btn btn-small btn-danger-quiet', 'data-testid': `line-delete-${l.number}`, onclick: (ev) => deleteLine(l, ev.currentTarget) }, t('delete')))));
    $('lines-body').replaceChildren(...rows);
    $('lines-empty').hidden = rows.length > 0;
    $('lines-table').hidden = rows.length === 0;
  }

  async function reloadLines() {
    const id = st.portalId;
    const list = await api('GET', `/portals/${id}/lines`);
    if (id === st.portalId) { st.lines = list; renderLines(); }
  }

  /** Add (no line) or edit the UTM tags of `l` (its number is the key: fixed while editing). */
  function openLineForm(l) {
    clearErrors(lineForm);
    $('line-form-title').textContent = l ? t('editLineTitle', { number: l.number }) : t('addLineTitle');
    $('l-number').value = l ? l.number : '';
    $('l-number').readOnly = !!l;
    lineForm.querySelectorAll('[data-utm]').forEach((e) => { e.value = (l && l.utm && l.utm[e.dataset.utm]) || ''; });
    lineForm.hidden = false;
    (l ? lineForm.querySelector('[data-utm]') : $('l-number')).focus();
  }
  function closeLineForm() { lineForm.hidden = true; }
  $('line-add').addEventListener('click', () => openLineForm(null));
  $('line-cancel').addEventListener('click', closeLineForm);

  lineForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(lineForm);
    const utm = {};
    lineForm.querySelectorAll('[data-utm]').forEach((e) => { if (e.value.trim()) { utm[e.dataset.utm] = e.value.trim(); } });
    const body = { number: $('l-number').value.trim(), utm: Object.keys(utm).length ? utm : null };
    $('line-save').disabled = true;
    try {
      await api('POST', `/portals/${st.portalId}/lines`, body);
      closeLineForm();
      toast(t('lineSaved'));
      await reloadLines();
    } catch (e) {
      if (e instanceof ApiFailure && e.body && e.body.fields && e.body.fields.length) { showErrors(lineForm, e.body.fields); } else if (!(e instanceof SignedOut)) {
        lineForm.querySelector('[data-error-for="*"]').textContent = t('requestFailed', { msg: e.message });
      }
    } finally {
      $('line-save').disabled = false;
    }
  });

  async function deleteLine(l, button) {
    if (!armed(button, 'confirm')) { return; }
    try {
      await api('DELETE', `/portals/${st.portalId}/lines/${encodeURIComponent(l.number)}`);
      toast(t('lineDeleted'));
      await reloadLines();
    } catch (e) { failed(e); }
  }

  // ---- calls view ------------------------------------------------------------------------------
  const ext = (x) => t('ext', { ext: x });
  function who(x) {
    if (!x) { return t('nobody'); }
    return x.user != null ? `${ext(x.extension)} · ${t('userN', { user: x.user })}` : ext(x.extension);
  }
  function endText(r) {
    if (!r) { return ''; }
    const base = t(`end_${r.reason}`, { status: r.status });
    return r.by ? `${base} ${t(`by_${r.by}`)}` : base;
  }
  function outcomeText(c) {
    if (!c.outcome) { return t('outcomeOpen'); }
    return c.status_code ? `${t(`outcome_${c.outcome}`)} (${c.status_code})` : t(`outcome_${c.outcome}`);
  }
  function responsibleCell(c) {
    return [el('div', {}, c.responsible != null ? t('userN', { user: c.responsible }) : t('nobody')),
      el('div', { class: 'small muted', 'data-testid': `call-reason-${c.id}` }, t(`reason_${c.responsible_reason}`))];
  }

  async function showCalls(id) {
    const seq = ++st.seq;
    if ($('call-details').dataset.call !== String(id)) { $('call-details').hidden = true; }
    showOnly('calls-view');
    if (!st.portals.length) { st.portals = await api('GET', '/portals'); }
    const calls = await api('GET', '/calls?limit=100');
    if (seq !== st.seq) { return; }
    st.calls = calls;
    const rows = calls.map((c) => el('tr', { 'data-testid': `call-row-${c.id}`, tabindex: 0, class: c.id === id ? 'selected' : '',
      onclick: () => go(`#/calls/${c.id}`), onkeydown: (ev) => { if (ev.key === 'Enter') { go(`#/calls/${c.id}`); } } },
    el('td', { class: 'nowrap' }, fmtTime(c.started_at)),
    el('td', {}, t(`kind_${c.kind}`)),
    el('td', {}, el('div', { class: 'mono' }, c.customer), c.line ? el('div', { class: 'small muted mono' }, `→ ${c.line}`) : null),
    el('td', { 'data-col': 'legs' }, el('div', { class: 'chips' }, c.legs.map((l) => el('span', { class: `chip ${l.state}`, title: endText(l.end_reason) }, l.extension)))),
    el('td', { 'data-col': 'first' }, who(c.first_talker)),
    el('td', { 'data-col': 'last' }, who(c.last_talker)),
    el('td', { 'data-col': 'responsible' }, responsibleCell(c)),
    el('td', { 'data-col': 'outcome' }, el('span', { class: `badge ${c.outcome || 'open'}` }, outcomeText(c)))));
    $('calls-body').replaceChildren(...rows);
    $('calls-empty').hidden = rows.length > 0;
    $('calls-table').hidden = rows.length === 0;
    if (id == null) { $('call-details').hidden = true; return; }
    const call = await api('GET', `/calls/${id}`).catch((e) => { if (e instanceof ApiFailure && e.status === 404) { return null; } throw e; });
    if (seq !== st.seq) { return; }
    renderCall(call);
  }

  function renderCall(c) {
    const box = $('call-details');
    box.hidden = !c;
    box.dataset.call = c ? String(c.id) : '';
    if (!c) { box.replaceChildren(); return; }
    const portal = st.portals.find((p) => p.id === c.portal);
    const facts = [
      ['colKind', t(`kind_${c.kind}`)], ['portal', portal ? portalLabel(portal) : `#${c.portal}`], ['colCustomer', c.customer],
      ['line', c.line || t('nobody')], ['correlation', c.correlation || t('nobody')],
      ['colStarted', fmtTime(c.started_at)], ['colAnswered', fmtTime(c.answered_at)], ['ended', fmtTime(c.ended_at)],
      ['talkSeconds', c.talk_seconds], ['colOutcome', outcomeText(c)],
      ['failedReason', c.failed_reason ? t(`failed_${c.failed_reason}`) : t('nobody')],
      ['manager', c.manager != null ? `${t('userN', { user: c.manager })}${c.routed_extension ? ` (${ext(c.routed_extension)})` : ''}` : t('nobody')],
      ['colFirst', who(c.first_talker)], ['colLast', who(c.last_talker)],
      ['colResponsible', `${c.responsible != null ? t('userN', { user: c.responsible }) : t('nobody')} — ${t(`reason_${c.responsible_reason}`)}`],
    ];
    const legs = el('div', { class: 'table-wrap' }, el('table', { class: 'grid compact', 'data-testid': 'call-legs' },
      el('thead', {}, el('tr', {}, ['colLeg', 'colExt', 'colDirection', 'colRole', 'colState', 'colEnd', 'colStarted', 'colAnswered', 'ended'].map((k) => el('th', {}, t(k))))),
      el('tbody', {}, c.legs.map((l) => el('tr', { 'data-testid': 'call-leg' },
        el('td', { class: 'mono small' }, l.leg), el('td', {}, l.user != null ? `${l.extension} · ${t('userN', { user: l.user })}` : l.extension),
        el('td', {}, t(`dir_${l.direction}`)), el('td', {}, t(`role_${l.role}`)), el('td', {}, t(`state_${l.state}`)),
        el('td', {}, endText(l.end_reason) || t('nobody')), el('td', { class: 'nowrap' }, fmtClock(l.offered_at)), el('td', { class: 'nowrap' }, fmtClock(l.answered_at)), el('td', { class: 'nowrap' }, fmtClock(l.ended_at)))))));
    const convs = c.conversations.length
      ? el('table', { class: 'grid compact', 'data-testid': 'call-conversations' },
        el('thead', {}, el('tr', {}, ['colExt', 'colFrom', 'colTo', 'colCounted'].map((k) => el('th', {}, t(k))))),
        el('tbody', {}, c.conversations.map((v) => el('tr', { 'data-testid': 'call-conversation' },
          el('td', {}, who(v)), el('td', { class: 'nowrap' }, fmtClock(v.started_at)), el('td', { class: 'nowrap' }, fmtClock(v.ended_at)), el('td', {}, t(v.counted ? 'yes' : 'no'))))))
      : el('p', { class: 'muted', 'data-testid': 'call-conversations' }, t('noConversations'));
    box.replaceChildren(
      el('div', { class: 'card-head' }, el('h2', { 'data-testid': 'call-title' }, t('callTitle', { id: c.id })),
        el('div', { class: 'toolbar' }, el('button', { type: 'button', class: 'btn', 'data-testid': 'call-close', onclick: () => go('#/calls') }, t('close')))),
      el('dl', { class: 'facts', 'data-testid': 'call-facts' }, facts.map(([k, v]) => [el('dt', {}, t(k)), el('dd', { 'data-fact': k }, String(v))])),
      el('h3', {}, t('legsTitle')), legs,
      el('h3', {}, t('conversationsTitle')), convs);
    box.scrollIntoView({ block: 'start' });
  }

  $('calls-refresh').addEventListener('click', () => route());

  // ---- start -----------------------------------------------------------------------------------
  applyI18n(document);
  if (!/^#\/(settings|calls)/.test(location.hash)) { history.replaceState(null, '', '#/settings'); }
  document.body.dataset.ready = '1';
  route();
})();
