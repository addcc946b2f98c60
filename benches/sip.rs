//! Criterion micro-benches: SIP parse, 302 serialisation, `decide()`, and the whole redirect
//! handler in memory (parse + look-up + answer), per message.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use callgate::phone::normalize_number;
use callgate::routing::{decide, DecisionLog, RedirectConfig, RedirectServer};
use callgate::sip::core::{to_tag_for, write_response, SipMessage};
use callgate::sip::transport::{Outbox, Peer, SipHandler, Transport};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn invite(caller: &str, branch: u64) -> Bytes {
    Bytes::from(format!(
        "INVITE sip:pm-route@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5095;branch=z9hG4bK-{branch}-1\r\n\
From: \"Customer\" <sip:{caller}@127.0.0.1:5095>;tag=1234SIPpTag01\r\n\
To: <sip:pm-route@127.0.0.1:5060>\r\n\
Call-ID: {branch}-1234@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:{caller}@127.0.0.1:5095>\r\n\
Max-Forwards: 70\r\n\
P-Asserted-Identity: <sip:{caller}@pbx.example.com>\r\n\
Diversion: <sip:74951234567@pbx.example.com>;reason=unconditional\r\n\
X-Call-Id: pbx-{branch}\r\n\
User-Agent: Asterisk PBX 20.5.0\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY\r\n\
Supported: replaces, timer\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 129\r\n\r\n\
v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n"
    ))
}

fn benches(c: &mut Criterion) {
    let msg = invite("79001234567", 1);
    let mut g = c.benchmark_group("sip");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_invite", |b| b.iter(|| SipMessage::parse(msg.clone()).unwrap()));
    let parsed = SipMessage::parse(msg.clone()).unwrap();
    let mut out = BytesMut::with_capacity(2048);
    g.bench_function("write_302", |b| {
        b.iter(|| {
            out.clear();
            write_response(&parsed, 302, "Moved Temporarily", Some(&to_tag_for(&parsed)), &[("Contact", b"<sip:101@127.0.0.1:5080>")], &mut out);
        })
    });
    g.finish();

    let (_dir, d) = common::directory(100_000);
    let snap = d.snapshot();
    let portal = snap.single().unwrap().clone();
    let caller = normalize_number("79000012345");
    let mut g = c.benchmark_group("routing");
    g.throughput(Throughput::Elements(1));
    g.bench_function("normalize_number", |b| b.iter(|| normalize_number("+7 (900) 001-23-45")));
    g.bench_function("lookup_and_decide", |b| {
        b.iter(|| {
            let m = d.index().lookup(portal.portal.id, caller.unwrap().as_u64());
            decide(Some(&portal), caller, b"79000012345", m).reason()
        })
    });
    let server = RedirectServer::new(d.clone(), RedirectConfig { no_decision_code: 404, max_remembered: 1_000_000 }, Arc::new(DecisionLog::new(1000)));
    let peer = Peer { addr: SocketAddr::from(([127, 0, 0, 1], 5095)), transport: Transport::Udp };
    // Messages built up front (distinct branches, so every INVITE is a new decision): the bench
    // measures the handler only, the user-space work per decision minus socket I/O.
    let pairs: Vec<(Bytes, Bytes)> = (0..4096u64)
        .map(|i| {
            let inv = invite("79000012345", i);
            let ack = Bytes::from(String::from_utf8_lossy(&inv).replacen("INVITE sip", "ACK sip", 1).replace("CSeq: 1 INVITE", "CSeq: 1 ACK"));
            (inv, ack)
        })
        .collect();
    let mut i = 0usize;
    let mut reply = Outbox::new();
    g.bench_function("redirect_handler_invite_and_ack", |b| {
        b.iter(|| {
            let (inv, ack) = &pairs[i % pairs.len()];
            i += 1;
            reply.clear();
            server.on_message(inv.clone(), peer, Instant::now(), &mut reply);
            reply.clear();
            server.on_message(ack.clone(), peer, Instant::now(), &mut reply);
        })
    });
    g.finish();
}

criterion_group!(sip, benches);
criterion_main!(sip);
