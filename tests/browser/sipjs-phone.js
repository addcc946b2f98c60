// A minimal SIP.js softphone for the browser tests (tests/browser/sipjs.mjs serves it, with SIP.js
// from node_modules, on callgate's origin): SIP.js's own UserAgent / Registerer / Invitation /
// Session API, the way a SIP.js application is written, with no UI. `window.phone` is what the
// test script drives through page.evaluate; `phone.events` is what the page saw (for the report).
import { UserAgent, Registerer, RegistererState, SessionState, version } from './sip.js/index.js';

const events = [];
const note = (what) => events.push(what);
let ua = null;
let session = null;
let ended = null;

/** Waits (bounded) until `ok()` holds; `what` names it in the error. */
async function until(ok, what, ms = 15000) {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) { throw new Error(`timed out waiting for ${what}; events: ${events.join(', ')}`); }
    await new Promise((r) => setTimeout(r, 50));
  }
}

function follow(s) {
  session = s;
  ended = null;
  s.stateChange.addListener((state) => {
    note(`session ${state}`);
    if (state === SessionState.Terminated) { ended = true; }
  });
  // Re-INVITEs from the other side (PBX refresh, hold): count them and let SIP.js answer.
  s.delegate = {
    onInvite: (request, response, status) => note(`re-INVITE answered ${status}`),
    onBye: (bye) => { note('BYE received'); bye.accept(); },
  };
}

window.phone = {
  version,
  events,

  /** Connects to `server` (ws URL) as `aor` and registers with the agent's credentials. */
  async register({ server, aor, user, password }) {
    ua = new UserAgent({
      uri: UserAgent.makeURI(aor),
      transportOptions: { server },
      authorizationUsername: user,
      authorizationPassword: password,
      logLevel: 'warn',
      sessionDescriptionHandlerFactoryOptions: { peerConnectionConfiguration: { iceServers: [] } },
      delegate: {
        onInvite: (invitation) => {
          note(`INVITE from ${invitation.remoteIdentity.uri.user}`);
          if (session && session.state !== SessionState.Terminated) { invitation.reject({ statusCode: 486 }); return; }
          follow(invitation); // SIP.js sends the 180 itself (sendInitialProvisionalResponse)
        },
      },
    });
    await ua.start();
    const registerer = new Registerer(ua);
    registerer.stateChange.addListener((state) => note(`registerer ${state}`));
    await registerer.register({ requestDelegate: { onReject: (r) => note(`REGISTER refused ${r.message.statusCode}`) } });
    await until(() => registerer.state === RegistererState.Registered, 'Registered');
    return { userAgent: ua.configuration.userAgentString, contact: String(ua.contact.uri) };
  },

  /** Answers the ringing call (waited for) with audio; resolves once it is established. */
  async answer() {
    await until(() => session && session.state === SessionState.Initial, 'an incoming INVITE');
    await session.accept({ sessionDescriptionHandlerOptions: { constraints: { audio: true, video: false } } });
    await until(() => session.state === SessionState.Established, 'Established');
    const who = session.remoteIdentity;
    return { user: who.uri.user, name: who.displayName || null };
  },

  /**
   * Holds (`true`) or resumes: a re-INVITE whose offer is sendonly (SIP.js's hold option of its
   * session description handler, as its SessionManager does), or sendrecv again. Resolves with
   * the direction of the answer SIP.js applied.
   */
  async hold(on) {
    const options = session.sessionDescriptionHandlerOptionsReInvite;
    session.sessionDescriptionHandlerOptionsReInvite = { ...options, hold: on };
    let outcome = null;
    await session.invite({ requestDelegate: { onAccept: () => { outcome = 'accepted'; }, onReject: (r) => { outcome = `refused ${r.message.statusCode}`; } } });
    await until(() => outcome !== null, 're-INVITE answer');
    if (outcome !== 'accepted') { throw new Error(`re-INVITE ${outcome}`); }
    const pc = session.sessionDescriptionHandler.peerConnection;
    const sdp = pc.remoteDescription ? pc.remoteDescription.sdp : '';
    return { offer: on ? 'sendonly' : 'sendrecv', answer: (sdp.match(/a=(sendonly|recvonly|inactive|sendrecv)/) || [null, null])[1] };
  },

  /** Blind transfer: REFER to `target` (a SIP URI); resolves with the REFER's status and the NOTIFY's sipfrag. */
  async refer(target) {
    let accepted = null;
    let frag = null;
    await session.refer(UserAgent.makeURI(target), {
      requestDelegate: { onAccept: (r) => { accepted = r.message.statusCode; }, onReject: (r) => { accepted = r.message.statusCode; } },
      onNotify: (n) => { frag = n.request.body; n.accept(); },
    });
    await until(() => accepted !== null && frag !== null, 'the REFER answered and NOTIFY');
    return { status: accepted, sipfrag: frag.trim() };
  },

  /** Hangs up (BYE). */
  async hangup() {
    await session.bye();
    await until(() => ended, 'Terminated');
  },

  /** Waits (bounded) for an event starting with `prefix`; all the events. */
  async waitEvent(prefix) {
    await until(() => events.some((e) => e.startsWith(prefix)), `event "${prefix}"`);
    return events;
  },

  /** Waits (bounded) for the call to end by itself (the PBX's BYE). */
  async waitEnded(ms) {
    await until(() => ended, 'the call to end', ms);
  },
};
