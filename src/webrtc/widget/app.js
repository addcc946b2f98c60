// callgate softphone: JsSIP over SIP-over-WebSocket (RFC 7118) to callgate's `GET /sip`.
// callgate is the registrar (per-agent digest credentials it issued); the PBX never sees this page.
// Stable `data-testid`s for the browser tests (tests/browser/). No media code beyond JsSIP's own,
// except attaching the remote stream to an <audio> element.
(function () {
  'use strict';

  var TEXT = {
    en: {
      title: 'Softphone', extension: 'Extension', password: 'Password', domain: 'SIP domain (portal)',
      wsUrl: 'WebSocket URL', login: 'Log in', logout: 'Log out', incoming: 'Incoming call',
      answer: 'Answer', hangup: 'Hang up', hold: 'Hold', unhold: 'Resume', transferTo: 'Transfer to extension',
      transfer: 'Transfer', unknown: 'unknown',
      registered: 'Registered', unregistered: 'Not registered', connecting: 'Connecting…', error: 'Error',
      ringing: 'Ringing', answering: 'Answering…', talking: 'In call', held: 'On hold', ended: 'Call ended',
      transferred: 'Transferred', failed: 'Call failed', dialNumber: 'Number to call', dial: 'Call',
      calling: 'Calling…', outgoing: 'Outgoing call', dtmfDigits: 'Tones (DTMF)', dtmf: 'Send tones',
      consult: 'Consult first', complete: 'Complete transfer', consultation: 'Consultation'
    },
    ru: {
      title: 'Софтфон', extension: 'Внутренний номер', password: 'Пароль', domain: 'SIP-домен (портал)',
      wsUrl: 'Адрес WebSocket', login: 'Войти', logout: 'Выйти', incoming: 'Входящий звонок',
      answer: 'Ответить', hangup: 'Положить трубку', hold: 'Удержание', unhold: 'Снять с удержания',
      transferTo: 'Перевести на номер', transfer: 'Перевести', unknown: 'неизвестен',
      registered: 'Зарегистрирован', unregistered: 'Не зарегистрирован', connecting: 'Подключение…', error: 'Ошибка',
      ringing: 'Звонит', answering: 'Соединение…', talking: 'Разговор', held: 'На удержании', ended: 'Звонок завершён',
      transferred: 'Переведён', failed: 'Звонок не состоялся', dialNumber: 'Номер для звонка', dial: 'Позвонить',
      calling: 'Вызов…', outgoing: 'Исходящий звонок', dtmfDigits: 'Тоновый набор (DTMF)', dtmf: 'Отправить',
      consult: 'Сначала переговорить', complete: 'Завершить перевод', consultation: 'Консультация'
    }
  };
  var lang = /^ru\b/i.test(navigator.language || '') ? 'ru' : 'en';
  var t = TEXT[lang];
  document.documentElement.lang = lang;

  function $(id) { return document.getElementById(id); }
  Array.prototype.forEach.call(document.querySelectorAll('[data-i18n]'), function (el) {
    el.textContent = t[el.getAttribute('data-i18n')];
  });

  // Defaults: the page's own origin for the WebSocket, query parameters for the rest (never a password).
  var params = new URLSearchParams(location.search);
  $('extension').value = params.get('ext') || '';
  $('domain').value = params.get('domain') || location.hostname;
  $('ws-url').value = sameOriginWs(params.get('ws')) || ((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/sip');

  // A `ws` prefill is taken only when it points at this page's own host: a link must not be
  // able to send an agent's digest answers to someone else's WebSocket (which could relay them
  // and register as the agent). The agent may still type another URL.
  function sameOriginWs(value) {
    if (!value) { return null; }
    try {
      var url = new URL(value, location.href);
      var secure = location.protocol === 'https:';
      var scheme = url.protocol === 'wss:' || (!secure && url.protocol === 'ws:');
      return scheme && url.host === location.host ? url.href : null;
    } catch (e) {
      return null;
    }
  }

  var ua = null;
  var session = null;
  var held = false;

  function setStatus(state, detail) {
    var el = $('status');
    el.setAttribute('data-state', state);
    el.textContent = t[state] + (detail ? ': ' + detail : '');
    var on = state === 'registered' || state === 'connecting';
    $('login-button').disabled = on;
    $('logout-button').disabled = !ua;
    $('dial').disabled = state !== 'registered' || !!session;
  }

  function setCall(state) {
    var panel = $('call');
    panel.setAttribute('data-state', state);
    $('call-state').textContent = t[state] || '';
    panel.hidden = state === 'idle';
    var live = state === 'ringing' || state === 'talking' || state === 'held' || state === 'answering' || state === 'calling';
    $('answer').disabled = state !== 'ringing';
    $('hangup').disabled = !live;
    $('hold').disabled = !(state === 'talking' || state === 'held');
    $('hold').textContent = state === 'held' ? t.unhold : t.hold;
    $('transfer').disabled = !(state === 'talking' || state === 'held');
    $('dial').disabled = !ua || live;
    $('dtmf').disabled = state !== 'talking';
    $('consult').disabled = !(state === 'talking' || state === 'held') || !!consult;
    $('complete').disabled = !consult || $('consult-state').getAttribute('data-state') !== 'talking';
  }

  // The consultation call of an attended transfer (the customer waits on hold meanwhile).
  var consult = null;
  function setConsult(state) {
    var el = $('consult-state');
    el.setAttribute('data-state', state);
    el.hidden = state === 'idle';
    el.textContent = t.consultation + ': ' + (t[state] || state);
    if (state === 'ended' || state === 'failed' || state === 'idle') { consult = null; }
    setCall($('call').getAttribute('data-state'));
  }

  function stop() {
    if (ua) { ua.stop(); }
    ua = null;
    session = null;
    setCall('idle');
  }

  $('login').addEventListener('submit', function (ev) {
    ev.preventDefault();
    stop();
    var ext = $('extension').value.trim();
    var domain = $('domain').value.trim();
    try {
      var socket = new JsSIP.WebSocketInterface($('ws-url').value.trim());
      ua = new JsSIP.UA({
        sockets: [socket],
        uri: 'sip:' + ext + '@' + domain,
        authorization_user: ext,
        password: $('password').value,
        realm: domain,
        register: true,
        session_timers: false
      });
    } catch (e) {
      ua = null;
      setStatus('error', e.message || String(e));
      return;
    }
    ua.on('connecting', function () { setStatus('connecting'); });
    ua.on('disconnected', function () { setStatus('error', 'WebSocket'); });
    ua.on('registered', function () { setStatus('registered'); });
    ua.on('unregistered', function () { setStatus('unregistered'); });
    ua.on('registrationFailed', function (e) { setStatus('error', e.cause || ''); });
    ua.on('newRTCSession', function (e) {
      if (e.originator !== 'remote') { return; }
      if (session) { e.session.terminate({ status_code: 486 }); return; }
      onIncoming(e.session, e.request);
    });
    setStatus('connecting');
    ua.start();
  });

  $('logout-button').addEventListener('click', function () {
    if (ua) { ua.unregister({ all: false }); }
    var old = ua;
    ua = null;
    setTimeout(function () { if (old) { old.stop(); } }, 500);
    session = null;
    setCall('idle');
    setStatus('unregistered');
  });

  function onIncoming(s, request) {
    var who = s.remote_identity;
    var number = (who && who.uri && who.uri.user) || t.unknown;
    var name = who && who.display_name;
    follow(s, name && name !== number ? name + ' (' + number + ')' : number, number, t.incoming);
    setCall('ringing');
    s.on('peerconnection', function (ev) { playRemote(ev.peerconnection); });
  }

  function playRemote(pc) {
    pc.addEventListener('track', function (te) {
      if (te.streams && te.streams[0]) { $('remote-audio').srcObject = te.streams[0]; }
    });
  }

  // One call at a time, incoming or outgoing: its events drive the panel.
  function follow(s, text, number, direction) {
    session = s;
    held = false;
    $('caller').textContent = text;
    $('caller').setAttribute('data-number', number);
    $('direction').textContent = direction;
    s.on('accepted', function () { if (session === s) { setCall('talking'); } });
    s.on('confirmed', function () { if (session === s) { setCall(held ? 'held' : 'talking'); } });
    s.on('hold', function () { held = true; if (session === s) { setCall('held'); } });
    s.on('unhold', function () { held = false; if (session === s) { setCall('talking'); } });
    s.on('ended', function () { if (session === s) { session = null; setCall('ended'); } });
    s.on('failed', function (e) {
      if (session === s) { session = null; setCall(e.cause === JsSIP.C.causes.CANCELED ? 'ended' : 'failed'); }
    });
  }

  // DTMF as SIP INFO (JsSIP's default; callgate passes it to the PBX), or RFC 4733 in the media
  // with ?dtmf=rfc4733.
  $('dtmf').addEventListener('click', function () {
    var digits = $('dtmf-digits').value.replace(/[^0-9*#A-D]/gi, '');
    if (!session || !digits) { return; }
    var rtp = params.get('dtmf') === 'rfc4733';
    session.sendDTMF(digits, rtp ? { transportType: JsSIP.C.DTMF_TRANSPORT.RFC2833 } : {});
    $('dtmf-digits').value = '';
  });

  // Outgoing calls go out through callgate to the PBX (which dials the number).
  $('dial-form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    var number = $('dial-number').value.trim();
    if (!ua || session || !number) { return; }
    var s = ua.call('sip:' + number + '@' + $('domain').value.trim(), {
      mediaConstraints: { audio: true, video: false }, pcConfig: { iceServers: [] }
    });
    follow(s, number, number, t.outgoing);
    setCall('calling');
    if (s.connection) { playRemote(s.connection); }
  });

  $('answer').addEventListener('click', function () {
    if (!session) { return; }
    setCall('answering');
    session.answer({ mediaConstraints: { audio: true, video: false } });
  });
  $('hangup').addEventListener('click', function () { if (session) { session.terminate(); } });
  $('hold').addEventListener('click', function () {
    if (!session) { return; }
    if (session.isOnHold().local) { session.unhold(); } else { session.hold(); }
  });
  // Attended transfer: hold the customer, call the target; once it answers, REFER the customer's
  // call to it with Replaces (the PBX joins them and hangs up both of ours).
  $('consult').addEventListener('click', function () {
    var target = $('transfer-target').value.trim();
    if (!session || consult || !target) { return; }
    if (!session.isOnHold().local) { session.hold(); }
    var c = ua.call('sip:' + target + '@' + $('domain').value.trim(), {
      mediaConstraints: { audio: true, video: false }, pcConfig: { iceServers: [] }
    });
    consult = c;
    setConsult('calling');
    if (c.connection) { playRemote(c.connection); }
    c.on('accepted', function () { if (consult === c) { setConsult('talking'); } });
    c.on('ended', function () { if (consult === c) { setConsult('ended'); } });
    c.on('failed', function () { if (consult === c) { setConsult('failed'); } });
  });
  $('complete').addEventListener('click', function () {
    var s = session;
    var c = consult;
    if (!s || !c) { return; }
    s.refer(c.remote_identity.uri, {
      replaces: c,
      eventHandlers: {
        accepted: function () {
          setCall('transferred');
          setTimeout(function () {
            if (s.isEstablished()) { s.terminate(); }
            if (c.isEstablished()) { c.terminate(); }
          }, 2000);
        },
        failed: function () { setCall('failed'); }
      }
    });
  });

  $('transfer').addEventListener('click', function () {
    var target = $('transfer-target').value.trim();
    if (!session || !target) { return; }
    var s = session;
    s.refer('sip:' + target + '@' + $('domain').value.trim(), {
      eventHandlers: {
        // The PBX usually hangs up the transferring agent itself; hang up only if it does not.
        accepted: function () {
          setCall('transferred');
          setTimeout(function () { if (s.isEstablished()) { s.terminate(); } }, 2000);
        },
        failed: function () { setCall('failed'); }
      }
    });
  });

  setStatus('unregistered');
  setCall('idle');
  window.callgateWidget = { lang: lang }; // for tests
})();
