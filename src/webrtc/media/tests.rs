//! The anchor's port-exhaustion report: `callgate_media_ports_exhausted_total` (and its warning)
//! counts calls that found no port, never calls that got one. Counted by a recorder local to the
//! test thread (the anchor runs on a current-thread runtime there), so tests running in parallel
//! cannot disturb the count.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use parking_lot::Mutex;

use super::{MediaAnchor, MediaConfig, MediaError};

/// Counters by `name{labels}`; gauges and histograms are dropped.
#[derive(Default)]
struct Counting(Mutex<HashMap<String, Arc<AtomicU64>>>);

impl Counting {
    fn get(&self, key: &str) -> u64 {
        self.0.lock().get(key).map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

impl Recorder for Counting {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        Counter::from_arc(Arc::clone(self.0.lock().entry(name).or_default()))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

const PBX_SDP: &str = "v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=pbx\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n";
const WEBRTC: &str = "callgate_media_ports_exhausted_total{range=webrtc_ports}";

#[test]
fn ports_exhausted_is_counted_only_for_a_call_that_found_no_port() {
    let recorder = Counting::default();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        rt.block_on(async {
            // One browser-leg port (ports outside every other test's ranges).
            let cfg = MediaConfig {
                bind_ip: "127.0.0.1".parse().expect("an address"),
                webrtc_ports: (42_700, 42_700),
                rtp_ports: (42_710, 42_729),
                ..MediaConfig::default()
            };
            let (anchor, _events) = MediaAnchor::start(cfg).await.expect("an anchor");
            let (first, _) = anchor.pbx_offer("first", PBX_SDP.as_bytes()).await.expect("a port was free");
            assert_eq!(recorder.get(WEBRTC), 0, "a call that got its port is no exhaustion");

            let second = anchor.pbx_offer("second", PBX_SDP.as_bytes()).await;
            assert!(matches!(second, Err(MediaError::PortsExhausted)), "{second:?}");
            assert_eq!(recorder.get(WEBRTC), 1, "the call that found none is counted once");

            anchor.close(first);
        });
    });
}
