//! Wiring: [`Gateway::build`] opens the store, binds every listener (port 0 allowed) and returns
//! the bound addresses; [`Gateway::run_until_stopped`] serves until the shutdown token fires and
//! then drains within `shutdown.grace`. No logic lives here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use parking_lot::RwLock;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::calls::CallsHandle;
use crate::config::{listener_addr, Config, Secret};
use crate::directory::Directory;
use crate::edge::Front;
use crate::http::{self, AppState, HttpLimits};
use crate::proxy::{Local, Proxy};
use crate::routing::{DecisionLog, RedirectConfig, RedirectServer};
use crate::sip::core::transaction::Timers;
use crate::sip::transport::{serve_tcp, serve_tls, Hub, SipHandler, TcpLimits, UdpDriver, WsEndpoint, WsLimits};
use crate::store::{SqliteStore, StoreHandle};

/// A built gateway: everything bound, nothing served yet.
pub struct Gateway {
    cfg: Config,
    state: AppState,
    http: TcpListener,
    sip_udp: Option<std::net::UdpSocket>,
    sip_tcp: Option<TcpListener>,
    /// SIP over TLS: the listener and its certificate.
    sip_tls: Option<(TcpListener, Arc<rustls::ServerConfig>)>,
    /// HTTPS (and WSS) on the HTTP listener.
    http_tls: Option<Arc<rustls::ServerConfig>>,
    addresses: BTreeMap<String, String>,
    shutdown: CancellationToken,
    /// Call effects on their way to the Bitrix24 outbox recorder.
    effects: tokio::sync::mpsc::Receiver<crate::calls::Effect>,
    /// This run's id (start time, ms): keeps outbox call keys unique across restarts.
    boot: u64,
    /// Calls the previous run left open, taken back from their checkpoints.
    restored: crate::calls::Restored,
    /// A test hook holding the media stage still ([`Self::with_media_gate`]).
    media_gate: Option<crate::webrtc::MediaGate>,
}

impl Gateway {
    /// Opens the store and binds all listeners.
    ///
    /// # Errors
    /// The store cannot be opened or a listener cannot be bound.
    pub async fn build(cfg: Config) -> anyhow::Result<Self> {
        crate::tls::install_crypto_provider();
        let store = SqliteStore::open(&cfg.store.path).with_context(|| format!("opening the store {}", cfg.store.path.display()))?;
        let store = StoreHandle::new(Arc::new(store));
        let token = admin_token(&cfg)?;
        let directory = Directory::default();
        directory.reload_blocking(&store).context("loading settings")?;
        let rows = directory.load_index_blocking(&store).context("loading the personal-manager index")?;
        tracing::info!(rows, "personal-manager index loaded from the store");
        let boot = crate::telemetry::unix_ms();
        crate::crm::notices::set_boot(boot);
        let (effects_tx, effects) = tokio::sync::mpsc::channel(cfg.crm.effects_queue);
        let calls = CallsHandle::with_sink(crate::calls::TrackerConfig::from(&cfg.calls), std::time::Instant::now(), crate::telemetry::unix_ms(), Some(effects_tx));
        let restored = crate::calls::restore_calls(store.inner(), &calls, boot, std::time::Instant::now()).context("restoring open calls from their checkpoints")?;
        if !restored.calls.is_empty() {
            tracing::info!(calls = restored.calls.len(), "calls open at the last stop restored from their checkpoints");
        }
        let skip: std::collections::HashSet<String> = restored.calls.iter().map(|c| c.call_key.clone()).collect();
        let reconciled = crate::crm::reconcile(store.inner(), &directory.snapshot(), boot, &skip).context("reconciling calls left open")?;
        if reconciled > 0 {
            tracing::warn!(calls = reconciled, "calls left open by the previous run without a checkpoint will be finished in Bitrix24 (call_state_lost)");
        }

        let mut addresses = BTreeMap::new();
        let http_addr = listener_addr(&cfg.http.listen).ok().flatten().context("http.listen")?;
        let http = TcpListener::bind(http_addr).await.with_context(|| format!("binding http.listen {http_addr}"))?;
        addresses.insert("http".to_owned(), http.local_addr()?.to_string());
        let sip_udp = bind_udp(&cfg.sip.udp, &mut addresses)?;
        let sip_tcp = bind_tcp(&cfg.sip.tcp, "sip_tcp", &mut addresses).await?;
        let http_tls = tls_config(&cfg.http.tls_cert, &cfg.http.tls_key, &[b"http/1.1"]).context("http.tls_cert / http.tls_key")?;
        addresses.insert("http_scheme".to_owned(), if http_tls.is_some() { "https" } else { "http" }.to_owned());
        let sip_tls = match tls_config(&cfg.sip.tls_cert, &cfg.sip.tls_key, &[]).context("sip.tls_cert / sip.tls_key")? {
            Some(config) => bind_tcp(&cfg.sip.tls, "sip_tls", &mut addresses).await?.map(|l| (l, config)),
            None => None,
        };

        let shutdown = CancellationToken::new();
        let state = AppState {
            store,
            token: Arc::new(token),
            addresses: Arc::new(RwLock::new(BTreeMap::new())),
            metrics: crate::telemetry::metrics(),
            directory,
            decisions: Arc::new(DecisionLog::new(10_000)),
            calls,
            shutdown: shutdown.clone(),
            media: crate::webrtc::BridgeSlot::default(),
            delivery_horizon: cfg.crm.delivery_horizon,
        };
        Ok(Self { cfg, state, http, sip_udp, sip_tcp, sip_tls, http_tls, addresses, shutdown, effects, boot, restored, media_gate: None })
    }

    /// Bound addresses by listener name (`http`, `sip_udp`, `sip_tcp`, `sip_tls`), and
    /// `http_scheme` (`http` or `https`).
    pub fn addresses(&self) -> &BTreeMap<String, String> {
        &self.addresses
    }

    /// The HTTP listener's address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound")
    }

    /// The admin token in force (configured or generated).
    pub fn admin_token(&self) -> &Secret {
        &self.state.token
    }

    /// A test hook: every media operation of browser calls waits for a permit of `gate` before
    /// it runs (tests hold the media stage still with it and see that SIP goes on meanwhile).
    #[must_use]
    pub fn with_media_gate(mut self, gate: crate::webrtc::MediaGate) -> Self {
        self.media_gate = Some(gate);
        self
    }

    /// Cancelling this token starts a graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then drains.
    ///
    /// # Errors
    /// A server failed while running.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self { cfg, state, http, sip_udp, sip_tcp, sip_tls, http_tls, addresses, shutdown, effects, boot, restored, media_gate } = self;
        for (name, addr) in &addresses {
            tracing::info!(listener = %name, %addr, "listening");
        }
        *state.addresses.write() = addresses;
        let tasks = TaskTracker::new();
        // The outbox outlives SIP and HTTP in a shutdown: effects of the last calls are written
        // before it stops (delivery itself resumes after the restart).
        let crm_cancel = CancellationToken::new();
        let crm_tasks = TaskTracker::new();
        let clicks = Arc::new(crate::crm::events::ClickToCalls::default());
        let rules = crm_rules(&cfg, boot, &restored.calls, &clicks);
        let (tokens, workers) = start_crm(&cfg, &state, effects, rules, &crm_tasks, &crm_cancel)?;
        // Stops with the outbox, after SIP: its last checkpoint holds the calls still open.
        crm_tasks.spawn(crate::calls::run_saver(state.calls.clone(), state.store.clone(), restored.keys, cfg.calls.checkpoint_interval, crm_cancel.clone()));
        let index_sync = crate::crm::IndexSync::start(Arc::clone(&tokens), &state.store, &state.directory, &crm_tasks, &crm_cancel);
        let events = start_events(&state, tokens, workers, clicks, Arc::clone(&index_sync), &crm_tasks, &crm_cancel).with_public_url(&cfg.http.public_url);
        index_sync.resync_webhook_portals(cfg.crm.webhook_resync_interval);
        crate::crm::events::OfflineEvents::new(Arc::clone(&events.tokens), state.directory.clone(), Arc::clone(&events.inbox)).start(cfg.crm.offline_events_interval, &crm_tasks, &crm_cancel);
        // Not a child of `shutdown`: SIP keeps serving open dialogs while calls drain.
        let sip_cancel = CancellationToken::new();
        let redirect_cfg = RedirectConfig { no_decision_code: cfg.sip.no_decision_code, max_remembered: 200_000 };
        let redirect = RedirectServer::new(state.directory.clone(), redirect_cfg, Arc::clone(&state.decisions)).with_calls(state.calls.clone());
        let local = Local {
            udp: sip_udp.as_ref().and_then(|s| s.local_addr().ok()),
            tcp: sip_tcp.as_ref().and_then(|s| s.local_addr().ok()),
            tls: sip_tls.as_ref().and_then(|(s, _)| s.local_addr().ok()),
            names: sip_names(&cfg),
        };
        let agents = start_registrar(&state).await?;
        let media_cfg = media_config(&cfg)?;
        let (mailbox, media_inbox) = crate::webrtc::MediaMailbox::new(media_cfg.max_sessions);
        let (anchor, media_events) = crate::webrtc::media::MediaAnchor::start(media_cfg).await.context("starting the media anchor ([media])")?;
        let bridge = Arc::new(crate::webrtc::Bridge::new(anchor, Arc::clone(&agents), state.directory.clone()));
        // The proxy's own refusals of an INVITE release the media the bridge set up for it.
        let proxy = Proxy::new(state.directory.clone(), local, state.calls.clone(), Timers::default())
            .with_agents(Arc::clone(&agents) as Arc<dyn crate::proxy::AgentDirectory>)
            .with_route_key(route_key(&cfg)?)
            .with_local_final_hook(Arc::clone(&bridge) as Arc<dyn crate::proxy::LocalFinalHook>);
        let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let _ = state.media.set(Arc::clone(&bridge));
        let front = Front::new(state.directory.clone(), Arc::new(redirect), Arc::new(proxy))
            .with_websocket(Arc::clone(&agents))
            .with_media(Arc::clone(&bridge), mailbox)
            .with_limiter(Arc::new(sip_limiter(&cfg)))
            .with_draining(Arc::clone(&draining))
            .with_call_gate(state.calls.clone());
        let front = Arc::new(front);
        let handler: Arc<dyn SipHandler> = Arc::clone(&front) as Arc<dyn SipHandler>;
        let tcp_limits = TcpLimits {
            max_message: cfg.sip.max_message_bytes,
            max_connections: cfg.sip.max_tcp_connections,
            idle: std::time::Duration::from_secs(300),
            write_timeout: cfg.sip.write_timeout,
            frame_timeout: cfg.sip.frame_timeout,
        };
        let hub = Hub::new(handler, tcp_limits, tasks.clone(), sip_cancel.clone());
        if let Some(client) = sip_tls_client(&cfg)? {
            hub.set_tls_client(client);
        }
        let udp = match sip_udp {
            Some(sock) => Some(UdpDriver::spawn(sock, cfg.sip.udp_threads, cfg.sip.max_message_bytes, &hub).context("starting sip.udp")?),
            None => None,
        };
        if let Some(listener) = sip_tcp {
            tasks.spawn(serve_tcp(listener, Arc::clone(&hub), tasks.clone()));
        }
        if let Some((listener, config)) = sip_tls {
            tasks.spawn(serve_tls(listener, config, Arc::clone(&hub), tasks.clone()));
        }
        // SIP timers fire at most one tick late (T1 is 500 ms; Kamailio's own timer ticks every
        // 62.5 ms). Every tick wakes the runtime, so it is not finer than it needs to be: at 20 ms
        // the idle process spent 0.6% of a core on wake-ups (115 a second), at 50 ms half that.
        tasks.spawn(Arc::clone(&hub).tick(SIP_TICK));
        let sweep = idle_sweep(cfg.media.idle_timeout);
        tasks.spawn(media_gone(media_events, Arc::clone(&front), Arc::clone(&bridge), Arc::clone(&hub), sweep, sip_cancel.clone()));
        // Browser calls' media operations, off the SIP threads; their messages re-enter the proxy.
        let deliver = deliver_through(Arc::clone(&hub));
        tasks.spawn(media_inbox.serve(Arc::clone(&bridge), Arc::clone(&front) as Arc<dyn crate::webrtc::mailbox::Resume>, deliver, media_gate, tasks.clone(), sip_cancel.clone()));
        let per_source = crate::limit::Rate::new(cfg.http.rate_per_source, cfg.http.burst_per_source);
        let limits = HttpLimits { body_limit: cfg.http.body_limit_bytes, timeout: cfg.http.request_timeout, per_source, allowed_origins: cfg.http.allowed_origins.clone() };
        let ws_limits = WsLimits { max_message: cfg.sip.max_message_bytes, max_connections: cfg.sip.max_tcp_connections, ..WsLimits::default() };
        let websocket = WsEndpoint::with_tls(Arc::clone(&hub), ws_limits, tasks.clone(), http_tls.is_some());
        let router = http::router(state.clone(), limits)
            .layer(axum::Extension(index_sync))
            .layer(axum::Extension(events))
            .layer(axum::Extension(agents))
            .layer(axum::Extension(websocket))
            .layer(axum::Extension(Arc::clone(hub.listeners())));
        // HTTP stays up while calls drain (in-flight admin requests, the events endpoint); /ready
        // answers 503 from the first moment of the shutdown.
        let http_stop = CancellationToken::new();
        let mut server = std::pin::pin!(serve_http(http, http_tls, &cfg.http, router, http_stop.clone()));
        tracing::info!("callgate ready");
        let failed = tokio::select! {
            r = &mut server => Some(r),
            () = shutdown.cancelled() => None,
        };
        if failed.is_none() {
            draining.store(true, std::sync::atomic::Ordering::Relaxed);
            drain_calls(&state.calls, cfg.shutdown.grace).await;
            http_stop.cancel();
            if tokio::time::timeout(cfg.shutdown.grace, &mut server).await.is_err() {
                tracing::warn!("http requests still running after the grace period; stopping anyway");
            }
        }
        sip_cancel.cancel();
        if let Some(udp) = udp {
            let _ = tokio::task::spawn_blocking(move || udp.join()).await;
        }
        tasks.close();
        if tokio::time::timeout(cfg.shutdown.grace, tasks.wait()).await.is_err() {
            tracing::warn!(grace = ?cfg.shutdown.grace, "tasks still running after the grace period; stopping anyway");
        }
        // Effects still waiting for room go to the recorder before it stops (bounded: a stuck
        // store leaves them to the next start's reconciliation).
        if tokio::time::timeout(cfg.shutdown.grace, state.calls.flush_effects()).await.is_err() {
            tracing::warn!(effects = state.calls.spilled_effects(), "the Bitrix24 outbox recorder did not take every call effect in time");
        }
        drop(state); // the tracker's sink: the recorder drains what is left, then stops
        crm_cancel.cancel();
        crm_tasks.close();
        if tokio::time::timeout(cfg.shutdown.grace, crm_tasks.wait()).await.is_err() {
            tracing::warn!("the Bitrix24 outbox did not stop in time; queued intents stay in the store");
        }
        tracing::info!("callgate stopped");
        match failed {
            Some(r) => r,
            None => Ok(()),
        }
    }
}

/// Serves HTTP (or HTTPS and WSS with `tls`) within the `[http]` connection limits until `stop`
/// fires and the open requests finish.
async fn serve_http(http: TcpListener, tls: Option<Arc<rustls::ServerConfig>>, cfg: &crate::config::HttpConfig, router: axum::Router, stop: CancellationToken) -> anyhow::Result<()> {
    let limits = http::ConnLimits {
        max_connections: cfg.max_connections,
        max_per_source: cfg.max_connections_per_source,
        header_read_timeout: cfg.header_read_timeout,
        idle_timeout: cfg.idle_timeout,
        max_header_bytes: cfg.max_header_bytes,
    };
    let what = if tls.is_some() { "https server" } else { "http server" };
    http::serve(http, tls, router, limits, stop).await.context(what)
}

/// New calls are refused by now; waits until the tracker has no open call or `grace` passed.
/// Calls still open after it are left to the next start: the last checkpoint (written when the
/// outbox stops) holds them, and the next run restores them (`calls::restore_calls`).
async fn drain_calls(calls: &CallsHandle, grace: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    let open = calls.open_count();
    tracing::info!(open_calls = open, ?grace, "shutting down: new calls get 503, open calls drain");
    loop {
        let open = calls.open_count();
        if open == 0 {
            tracing::info!("every call has ended");
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(open_calls = open, "grace period over with calls still open; they are checkpointed and taken back at the next start");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// How often SIP timers (transactions, registrations, the call tracker) are looked at.
const SIP_TICK: std::time::Duration = std::time::Duration::from_millis(50);

/// The SIP per-source limiter from `[sip]`.
fn sip_limiter(cfg: &Config) -> crate::limit::SourceLimiter {
    use crate::limit::{Rate, SourceLimiter};
    let normal = Rate::new(cfg.sip.rate_per_source, cfg.sip.burst_per_source);
    let trusted = Rate::new(cfg.sip.trusted_rate, cfg.sip.trusted_burst);
    SourceLimiter::new(normal, trusted, 65_536, std::time::Instant::now())
}

/// The rustls config for a listener, or `None` when no certificate is configured.
fn tls_config(cert: &str, key: &str, alpn: &[&[u8]]) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    if cert.is_empty() || key.is_empty() {
        return Ok(None);
    }
    Ok(Some(crate::tls::server_config(Path::new(cert), Path::new(key), alpn)?))
}

/// Starts the Bitrix24 side: the outbox recorder and a delivery worker for every portal with
/// queued intents (more start when the recorder queues for them). Returns the portals' token
/// registry, which the index sync and the events share, and the workers.
fn start_crm(
    cfg: &Config,
    state: &AppState,
    effects: tokio::sync::mpsc::Receiver<crate::calls::Effect>,
    rules: crate::crm::Rules,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
) -> anyhow::Result<(Arc<crate::crm::Tokens>, Arc<crate::crm::Workers>)> {
    use crate::crm::{RestBitrix, WorkerConfig, Workers};
    let ca = if cfg.crm.ca_file.is_empty() { None } else { Some(std::fs::read(&cfg.crm.ca_file).with_context(|| format!("reading crm.ca_file {}", cfg.crm.ca_file))?) };
    let client = crate::crm::client(|b| {
        let b = b.request_timeout(cfg.crm.request_timeout);
        match ca {
            Some(pem) => b.with_root_ca(pem),
            None => b,
        }
    })
    .context("building the Bitrix24 HTTP client")?;
    let tokens = crate::crm::Tokens::new(client, state.store.clone());
    let bitrix: Arc<dyn crate::crm::Bitrix> = Arc::new(RestBitrix::new(Arc::clone(&tokens)));
    let wcfg = WorkerConfig { rate_per_s: cfg.crm.rate_per_s, burst: cfg.crm.burst, min_backoff: cfg.crm.min_backoff, max_backoff: cfg.crm.max_backoff, delivery_horizon: cfg.crm.delivery_horizon, batch_interval: cfg.crm.batch_interval };
    let workers = Workers::new(state.store.clone(), state.directory.clone(), bitrix, wcfg, tasks.clone(), cancel.clone());
    tasks.spawn(crate::crm::run_recorder(effects, rules, state.store.clone(), state.directory.clone(), Arc::clone(&workers), cancel.clone()));
    for portal in state.directory.snapshot().portals.keys() {
        workers.wake(*portal);
    }
    Ok((tokens, workers))
}

/// The rules that turn call effects into Bitrix24 intents for this run (`boot`): outgoing calls
/// that match a pending click-to-call in `clicks` take its CALL_ID, restored calls keep their key.
fn crm_rules(cfg: &Config, boot: u64, restored: &[crate::calls::RestoredCall], clicks: &Arc<crate::crm::events::ClickToCalls>) -> crate::crm::Rules {
    let window = u64::try_from(cfg.crm.show_hide_window.as_millis()).unwrap_or(300);
    crate::crm::Rules::new(boot, window).with_click_to_calls(Arc::clone(clicks)).with_restored(restored)
}

/// Starts the processor behind `POST /api/v1/bitrix24/events` (click-to-calls, CRM changes,
/// binding the app's events after an install); returns what the endpoint needs.
fn start_events(
    state: &AppState,
    tokens: Arc<crate::crm::Tokens>,
    workers: Arc<crate::crm::Workers>,
    clicks: Arc<crate::crm::events::ClickToCalls>,
    index: Arc<crate::crm::IndexSync>,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
) -> crate::crm::events::EventsHub {
    use crate::crm::events::{EventInbox, EventProcessor, EventsHub, QUEUE};
    let (inbox, rx) = EventInbox::new(QUEUE);
    let originate: Arc<dyn crate::crm::events::Originate> = Arc::new(crate::crm::originate::SipOriginator::default());
    let processor = EventProcessor { store: state.store.clone(), directory: state.directory.clone(), tokens: Arc::clone(&tokens), workers, index, clicks, originate: Some(originate) };
    tasks.spawn(processor.run(rx, tasks.clone(), cancel.clone()));
    EventsHub::new(inbox, tokens)
}

/// The browser agents' registrar (WebRTC widget) with the stored credentials and a fresh nonce
/// key for this run.
async fn start_registrar(state: &AppState) -> anyhow::Result<Arc<crate::webrtc::Registrar>> {
    use crate::webrtc::{Credentials, Registrar, RegistrarConfig};
    let rows = state.store.run(|s| s.list_agent_credentials()).await.context("loading browser agents' credentials")?;
    let credentials = Arc::new(Credentials::new(rows));
    Ok(Arc::new(Registrar::new(state.directory.clone(), credentials, RegistrarConfig::default(), &rand::random(), std::time::Instant::now())))
}

/// Binds the UDP socket with large kernel buffers (bursts of thousands of INVITEs per second).
fn bind_udp(spec: &str, out: &mut BTreeMap<String, String>) -> anyhow::Result<Option<std::net::UdpSocket>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let Some(addr) = listener_addr(spec).ok().flatten() else { return Ok(None) };
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = sock.set_recv_buffer_size(8 << 20);
    let _ = sock.set_send_buffer_size(8 << 20);
    sock.bind(&addr.into()).with_context(|| format!("binding sip.udp {addr}"))?;
    let sock: std::net::UdpSocket = sock.into();
    out.insert("sip_udp".to_owned(), sock.local_addr()?.to_string());
    Ok(Some(sock))
}

async fn bind_tcp(spec: &str, name: &str, out: &mut BTreeMap<String, String>) -> anyhow::Result<Option<TcpListener>> {
    let Some(addr) = listener_addr(spec).ok().flatten() else { return Ok(None) };
    let sock = TcpListener::bind(addr).await.with_context(|| format!("binding {name} {addr}"))?;
    out.insert(name.to_owned(), sock.local_addr()?.to_string());
    Ok(Some(sock))
}

/// The configured token, or the one generated on first run and kept beside the database.
fn admin_token(cfg: &Config) -> anyhow::Result<Secret> {
    if !cfg.admin.token.is_empty() {
        return Ok(cfg.admin.token.clone());
    }
    let dir = cfg.store.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let path = dir.join("admin.token");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let t = text.trim();
        if t.len() >= 16 {
            tracing::info!(path = %path.display(), "admin token read from file");
            keep_private(&path).with_context(|| format!("making {} private", path.display()))?;
            return Ok(Secret::new(t));
        }
    }
    let token = hex::encode(rand::random::<[u8; 24]>());
    write_private(&path, &token).with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), "admin token generated; read it from this file");
    Ok(Secret::new(token))
}

/// The key that signs callgate's Record-Route and Path tokens: 32 random bytes generated on
/// first run into `route.key` beside the database (0600), so dialogs and registrations routed
/// before a restart are still recognised after it.
/// How callgate dials a PBX over TLS (`pbx_host` with `;transport=tls`): the platform's roots
/// plus `sip.tls_ca_file`. A host with no root at all and no `sip.tls_ca_file` cannot verify
/// anyone: TLS is then never dialled (such a PBX is unreachable, its calls get 503), and said.
/// The host names that are callgate in a Route or Request-URI: `sip.names`, and the DNS names of
/// the SIP TLS certificate (a phone that verifies it must call callgate by one of them).
fn sip_names(cfg: &Config) -> Vec<String> {
    let mut names: Vec<String> = cfg.sip.names.iter().map(|n| n.to_ascii_lowercase()).collect();
    if !cfg.sip.tls_cert.is_empty() {
        names.extend(crate::tls::dns_names(Path::new(&cfg.sip.tls_cert)));
    }
    names.sort();
    names.dedup();
    names
}

fn sip_tls_client(cfg: &Config) -> anyhow::Result<Option<Arc<rustls::ClientConfig>>> {
    let extra = (!cfg.sip.tls_ca_file.is_empty()).then(|| Path::new(&cfg.sip.tls_ca_file));
    match crate::tls::client_config(extra) {
        Ok(config) => Ok(Some(config)),
        Err(e) if extra.is_some() => Err(e).context("sip.tls_ca_file"),
        Err(e) => {
            tracing::warn!(error = %e, "no root certificates: callgate will not dial a PBX over TLS (set sip.tls_ca_file)");
            Ok(None)
        }
    }
}

fn route_key(cfg: &Config) -> anyhow::Result<crate::proxy::RouteKey> {
    let dir = cfg.store.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let path = dir.join("route.key");
    let stored = std::fs::read_to_string(&path).ok().and_then(|t| hex::decode(t.trim()).ok()).and_then(|b| <[u8; 32]>::try_from(b).ok());
    let secret = match stored {
        Some(secret) => secret,
        None => {
            let secret: [u8; 32] = rand::random();
            write_private(&path, &hex::encode(secret)).with_context(|| format!("writing {}", path.display()))?;
            tracing::info!(path = %path.display(), "SIP route key generated");
            secret
        }
    };
    Ok(crate::proxy::RouteKey::new(&secret))
}

/// Writes `text` to `path`, mode 0600 whatever the umask and whatever mode a file already
/// there had (`mode` applies only to a file this call creates, so the open file is chmodded
/// before the secret goes in).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")
}

/// Tightens an existing token file another version or an operator left readable by others.
fn keep_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the admin token file was readable by others; now 0600");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Builds, serves, and stops on SIGTERM or SIGINT (what `callgate run` does).
///
/// # Errors
/// Start-up or serving failed.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Registered before anything is bound or logged: a signal that arrives as soon as the
    // listeners are announced must start a graceful stop, not kill the process.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let gateway = Gateway::build(cfg).await?;
    let token = gateway.shutdown_token();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutdown signal received");
        token.cancel();
    });
    gateway.run_until_stopped().await
}

/// `callgate import-index`: CSV `number,user_id` rows into the store's index snapshot.
///
/// # Errors
/// The store cannot be opened, the portal does not exist, the file is unreadable or has bad rows
/// (then nothing is imported).
pub fn import_index(cfg: &Config, portal: i64, file: &Path, replace: bool) -> anyhow::Result<usize> {
    use crate::store::Store;
    let store = SqliteStore::open(&cfg.store.path).with_context(|| format!("opening the store {}", cfg.store.path.display()))?;
    store.get_portal(portal)?.with_context(|| format!("portal {portal} does not exist"))?;
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let rows = crate::directory::parse_csv(&text).map_err(|bad| {
        let lines: Vec<String> = bad.iter().map(|b| format!("line {}: {}", b.line, b.message)).collect();
        anyhow::anyhow!("bad rows, nothing imported:\n  {}", lines.join("\n  "))
    })?;
    if replace {
        store.clear_index(portal)?;
    }
    store.upsert_index(portal, &rows)?;
    Ok(rows.len())
}

/// The media anchor's settings from `[media]` (validated with the rest of the config; a bad
/// section stops the start with every bad key named).
fn media_config(cfg: &Config) -> anyhow::Result<crate::webrtc::media::MediaConfig> {
    if cfg.media.idle_timeout <= cfg.calls.ring_timeout {
        tracing::warn!(idle_timeout = ?cfg.media.idle_timeout, ring_timeout = ?cfg.calls.ring_timeout, "media.idle_timeout is not above calls.ring_timeout: a call to a browser agent that rings long may lose its media");
    }
    crate::webrtc::media::MediaConfig::try_from(&cfg.media).map_err(|errs| {
        let list: Vec<String> = errs.into_iter().map(|(k, m)| format!("{k}: {m}")).collect();
        anyhow::anyhow!("bad [media] settings: {}", list.join("; "))
    })
}

/// Browsers the media anchor lost (ICE consent, DTLS closed) and sessions it found idle (every
/// `sweep`): their calls are hung up through the proxy as if the browser had sent BYE. Ends when
/// the anchor does. Also ends with SIP (`cancel`): it holds the front, which holds the anchor's
/// sender.
async fn media_gone(
    mut events: tokio::sync::mpsc::Receiver<crate::webrtc::media::MediaEvent>,
    front: Arc<Front>,
    bridge: Arc<crate::webrtc::Bridge>,
    hub: Arc<Hub>,
    sweep: std::time::Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(sweep);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            e = events.recv() => match e {
                Some(crate::webrtc::media::MediaEvent::BrowserGone { id, reason }) => {
                    tracing::info!(session = id.0, reason, "browser media gone");
                    hang_up_media(&front, &hub, id);
                }
                Some(_) => {}
                None => break,
            },
            _ = tick.tick() => {
                for id in bridge.anchor().expire_idle(tokio::time::Instant::now().into_std()) {
                    hang_up_media(&front, &hub, id);
                }
            }
        }
    }
}

/// How often idle media sessions are looked for: a quarter of the timeout, within 250 ms..5 s.
fn idle_sweep(idle_timeout: std::time::Duration) -> std::time::Duration {
    (idle_timeout / 4).clamp(std::time::Duration::from_millis(250), std::time::Duration::from_secs(5))
}

/// Sends what the front produced off a SIP thread (a message back from the media runtime).
fn deliver_through(hub: Arc<Hub>) -> crate::webrtc::mailbox::Deliver {
    Arc::new(move |out: crate::sip::transport::Outbox| {
        for (to, data) in out.sends {
            hub.send(to, data);
        }
    })
}

/// Ends the call of media session `id` through the proxy and sends what that produced.
fn hang_up_media(front: &Front, hub: &Arc<Hub>, id: crate::webrtc::media::SessionId) {
    let mut out = crate::sip::transport::Outbox::new();
    front.media_gone(id, tokio::time::Instant::now().into_std(), &mut out);
    for (to, data) in out.sends.drain(..) {
        hub.send(to, data);
    }
}
