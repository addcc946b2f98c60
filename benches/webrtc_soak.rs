//! Soak benchmark of the media anchor: N concurrent bridged calls (default 200, `SOAK_CALLS`),
//! each with a `webrtc` 0.21.1 browser peer (`tests/it/media/browser.rs`) and a UDP "PBX", both
//! sending 50 PCMU packets/s for `SOAK_SECS` (default 20). Prints CPU (total and per call) and
//! RSS per call, then hangs everything up and checks that no session, port or peer connection
//! is left (the engine's handler `Drop` is counted, on both sides).
//!
//! What the CPU figures include: the anchor and the load client run in one process but on two
//! tokio runtimes with named worker threads ("anchor-rt", "client-rt"); the anchor's share is
//! the CPU of its threads read from /proc/self/task/*/stat, and the anchor's SDP calls are
//! spawned on its runtime so its peer connections' drivers and relay tasks run there. The
//! total is the whole process (/proc/self/stat). RSS cannot be split: it is the process's.
//!
//! Run: `cargo bench --bench webrtc_soak` (env SOAK_CALLS, SOAK_SECS, SOAK_ANCHOR_THREADS).

#[path = "../tests/it/media/browser.rs"]
#[allow(dead_code, unreachable_pub)]
mod browser;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use browser::FakeBrowser;
use callgate::webrtc::media::{MediaAnchor, MediaConfig, SessionId};
use tokio::net::UdpSocket;
use tokio::runtime::{Handle, Runtime};
use tokio_util::sync::CancellationToken;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// (utime + stime) in ticks from a /proc stat line (fields after the `(comm)`).
fn stat_ticks(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let rest: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15.
    Some((
        comm,
        rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?,
    ))
}

fn process_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| stat_ticks(&s))
        .map_or(0, |t| t.1)
}

/// CPU ticks per thread-name prefix, summed over live threads.
fn thread_ticks() -> HashMap<String, u64> {
    let mut m = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return m;
    };
    for e in dir.flatten() {
        if let Some((comm, t)) = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| stat_ticks(&s))
        {
            let key = if comm.starts_with("anchor-rt") {
                "anchor"
            } else if comm.starts_with("client-rt") {
                "client"
            } else {
                "other"
            };
            *m.entry(key.to_owned()).or_default() += t;
        }
    }
    m
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn pbx_sdp(port: u16) -> String {
    format!(
        "v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=pbx\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )
}

fn our_port(plain: &str) -> u16 {
    plain
        .lines()
        .find(|l| l.starts_with("m=audio"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap()
}

#[derive(Default)]
struct Totals {
    pbx_received: AtomicU64,
    pbx_sent: AtomicU64,
    browser_sent: AtomicU64,
}

struct Call {
    id: SessionId,
    browser: Arc<FakeBrowser>,
}

/// Runs an anchor call on the anchor's runtime (so its engine tasks live there).
async fn on_anchor<T: Send + 'static>(
    rt: &Handle,
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    rt.spawn(f).await.expect("anchor task")
}

async fn set_up(
    anchor: MediaAnchor,
    rt: Handle,
    totals: Arc<Totals>,
    stop: CancellationToken,
) -> Call {
    let pbx = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let sdp = pbx_sdp(pbx.local_addr().unwrap().port());
    let a = anchor.clone();
    let (id, offer) = on_anchor(
        &rt,
        async move { a.pbx_offer("soak", sdp.as_bytes()).await },
    )
    .await
    .unwrap();
    let browser = Arc::new(FakeBrowser::new(&[("audio/PCMU", 0)], false).await);
    let answer = browser.answer(&offer).await;
    let a = anchor.clone();
    let plain = on_anchor(
        &rt,
        async move { a.browser_answer(id, answer.as_bytes()).await },
    )
    .await
    .unwrap();
    let to: SocketAddr = format!("127.0.0.1:{}", our_port(&plain)).parse().unwrap();
    assert!(
        browser.connected(Duration::from_secs(20)).await,
        "a soak call never connected"
    );
    // One task per call plays both ends: the PBX and the browser microphone, 50 packets/s each.
    let b = Arc::clone(&browser);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        // A late tick sends its packet at once (the average stays 50/s when the machine is busy).
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut buf = [0u8; 1500];
        let payload = [0xd5u8; 160];
        let mut pkt = vec![0x80u8, 0];
        pkt.resize(12, 0);
        pkt.extend_from_slice(&payload);
        let mut seq: u16 = 0;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                r = pbx.recv_from(&mut buf) => {
                    if r.is_ok() {
                        totals.pbx_received.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ = tick.tick() => {
                    seq = seq.wrapping_add(1);
                    let ts = u32::from(seq) * 160;
                    pkt[2..4].copy_from_slice(&seq.to_be_bytes());
                    pkt[4..8].copy_from_slice(&ts.to_be_bytes());
                    pkt[8..12].copy_from_slice(&0x5151_5151u32.to_be_bytes());
                    if pbx.send_to(&pkt, to).await.is_ok() {
                        totals.pbx_sent.fetch_add(1, Ordering::Relaxed);
                    }
                    if b.send(0, seq, ts, &payload).await {
                        totals.browser_sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    });
    Call { id, browser }
}

fn runtime(name: &'static str, threads: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

fn main() {
    let n = env_num("SOAK_CALLS", 200) as usize;
    let secs = env_num("SOAK_SECS", 20);
    let anchor_threads = env_num("SOAK_ANCHOR_THREADS", 2) as usize;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!(
        "webrtc_soak: {n} calls, {secs} s, {cores} cores, anchor runtime {anchor_threads} threads"
    );

    let anchor_rt = runtime("anchor-rt", anchor_threads);
    let client_rt = runtime("client-rt", 2);
    let cfg = MediaConfig {
        webrtc_ports: (40_000, 40_000 + n as u16 + 99),
        rtp_ports: (30_000, 30_000 + 2 * n as u16 + 199),
        max_sessions: n + 10,
        ..MediaConfig::default()
    };
    let (anchor, _events) = anchor_rt.block_on(MediaAnchor::start(cfg)).unwrap();
    let rss0 = rss_kib();
    let totals = Arc::new(Totals::default());
    let stop = CancellationToken::new();

    client_rt.block_on(async {
        // Set up
        let t = Instant::now();
        let mut calls = Vec::with_capacity(n);
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            set.spawn(set_up(anchor.clone(), anchor_rt.handle().clone(), Arc::clone(&totals), stop.clone()));
            if set.len() >= 20 || i + 1 == n {
                while let Some(c) = set.join_next().await {
                    calls.push(c.expect("set-up task"));
                }
            }
        }
        println!("set up {} calls in {:.1} s; open sessions {}", calls.len(), t.elapsed().as_secs_f64(), anchor.open_sessions());

        // Steady state: measure.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (p0, th0, w0) = (process_ticks(), thread_ticks(), Instant::now());
        let pbx_rx0 = totals.pbx_received.load(Ordering::Relaxed);
        let sent0 = (totals.pbx_sent.load(Ordering::Relaxed), totals.browser_sent.load(Ordering::Relaxed));
        let stats0: (u64, u64) = calls.iter().filter_map(|c| anchor.stats(c.id)).fold((0, 0), |a, s| (a.0 + s.to_browser_packets, a.1 + s.to_pbx_packets));
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let (p1, th1, wall) = (process_ticks(), thread_ticks(), w0.elapsed().as_secs_f64());
        let rss1 = rss_kib();
        let pbx_rx = totals.pbx_received.load(Ordering::Relaxed) - pbx_rx0;
        let sent = (totals.pbx_sent.load(Ordering::Relaxed) - sent0.0, totals.browser_sent.load(Ordering::Relaxed) - sent0.1);
        let stats1: (u64, u64) = calls.iter().filter_map(|c| anchor.stats(c.id)).fold((0, 0), |a, s| (a.0 + s.to_browser_packets, a.1 + s.to_pbx_packets));
        let browser_rx: u64 = calls.iter().map(|c| c.browser.received.load(Ordering::Relaxed)).sum();

        let hz = ticks_per_s();
        let pct = |ticks: u64| 100.0 * ticks as f64 / hz / wall;
        let total = p1 - p0;
        let part = |k: &str| th1.get(k).copied().unwrap_or(0).saturating_sub(th0.get(k).copied().unwrap_or(0));
        let expected = 50.0 * wall * n as f64;
        println!("-- steady state over {wall:.1} s --");
        println!(
            "load sent: PBXs {:.0} pkt/s, browsers {:.0} pkt/s (target {} each)",
            sent.0 as f64 / wall,
            sent.1 as f64 / wall,
            50 * n
        );
        println!(
            "anchor relayed: to browsers {:.0} pkt/s, to PBXs {:.0} pkt/s (expected {:.0} each); PBXs received {:.0} pkt/s; browsers received {browser_rx} in all",
            (stats1.0 - stats0.0) as f64 / wall,
            (stats1.1 - stats0.1) as f64 / wall,
            expected / wall,
            pbx_rx as f64 / wall
        );
        println!(
            "CPU whole process (anchor + load client): {:.1}% of one core = {:.1}% of {cores} cores; {:.3}% of a core per call",
            pct(total),
            pct(total) / cores as f64,
            pct(total) / n as f64
        );
        println!(
            "CPU anchor threads only: {:.1}% of one core = {:.1}% of {cores} cores; {:.3}% of a core per call",
            pct(part("anchor")),
            pct(part("anchor")) / cores as f64,
            pct(part("anchor")) / n as f64
        );
        println!("CPU load-client threads: {:.1}% of one core; other threads: {:.1}%", pct(part("client")), pct(part("other")));
        println!(
            "RSS: {} MiB before, {} MiB with {n} calls: {:.0} KiB per call (anchor + client side together)",
            rss0 / 1024,
            rss1 / 1024,
            (rss1.saturating_sub(rss0)) as f64 / n as f64
        );

        // Hang up everything.
        stop.cancel();
        for c in &calls {
            anchor.close(c.id);
        }
        for c in &calls {
            c.browser.close().await;
        }
        drop(calls);
        let t = Instant::now();
        for _ in 0..300 {
            if anchor.open_sessions() == 0 && anchor.live_peer_connections() == 0 && anchor.ports_in_use() == (0, 0) && browser::live_browsers() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "after hang-up ({:.1} s): open sessions {}, anchor peer connections alive {}, ports in use {:?}, browser peer connections alive {}",
            t.elapsed().as_secs_f64(),
            anchor.open_sessions(),
            anchor.live_peer_connections(),
            anchor.ports_in_use(),
            browser::live_browsers()
        );
        println!("RSS after hang-up: {} MiB", rss_kib() / 1024);
    });
}
