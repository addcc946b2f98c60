//! Rewriting messages a proxy forwards (RFC 3261 §16.6 and §16.7): a new top Via, Max-Forwards
//! decremented, our Route value popped, Record-Route or Path inserted, optionally a new
//! Request-URI; for responses, our top Via removed. Every other byte is copied as received:
//! unknown headers, folding, compact names and bodies pass through untouched.

use bytes::BytesMut;

use super::header::HeaderName;
use super::message::SipMessage;
use super::scan::comma_values;

/// Says whether a header (by parsed and raw name, and value) is left out of a forwarded request.
pub type StripHeader<'a> = &'a dyn Fn(HeaderName, &[u8], &[u8]) -> bool;

/// What changes in a forwarded request.
#[derive(Default, Clone, Copy)]
pub struct RequestEdit<'a> {
    /// A new Request-URI (`None`: keep the received one).
    pub request_uri: Option<&'a [u8]>,
    /// The Via value to put on top, e.g. `SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK..`.
    pub via: &'a [u8],
    /// The received top Via value with `received`/`rport` filled in (`Via::stamped`), to take
    /// its place (`None`: copied as received).
    pub top_via: Option<&'a [u8]>,
    /// Record-Route values to add above the received ones (two when changing transport).
    pub record_route: &'a [&'a [u8]],
    /// A Path value to add (a REGISTER relayed by an edge proxy, RFC 3327).
    pub path: Option<&'a [u8]>,
    /// Further header lines to add, `(name, value)`, after Record-Route and Path.
    pub extra: &'a [(&'a [u8], &'a [u8])],
    /// Leading Route values to drop (they name this proxy: one, or two after a transport change).
    pub pop_route: usize,
    /// Headers not to pass on (by parsed and raw name): what the sender may not say onward.
    pub strip: Option<StripHeader<'a>>,
}

impl std::fmt::Debug for RequestEdit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestEdit").field("pop_route", &self.pop_route).field("strips", &self.strip.is_some()).finish_non_exhaustive()
    }
}

/// Writes `req` with `edit` applied into `out`.
pub fn write_forwarded_request(req: &SipMessage, edit: &RequestEdit<'_>, out: &mut BytesMut) {
    let method = req.method_raw().unwrap_or(b"INVITE");
    let uri = edit.request_uri.or_else(|| req.request_uri()).unwrap_or_default();
    out.extend_from_slice(method);
    out.extend_from_slice(b" ");
    out.extend_from_slice(uri);
    out.extend_from_slice(b" SIP/2.0\r\nVia: ");
    out.extend_from_slice(edit.via);
    out.extend_from_slice(b"\r\n");
    for rr in edit.record_route {
        line(out, b"Record-Route", rr);
    }
    if let Some(path) = edit.path {
        line(out, b"Path", path);
    }
    for (name, value) in edit.extra {
        line(out, name, value);
    }
    let mut to_pop = edit.pop_route;
    let mut saw_max_forwards = false;
    let mut top_via = edit.top_via;
    for (name, raw_name, value) in req.header_lines() {
        if edit.strip.is_some_and(|strip| strip(name, raw_name, value)) {
            continue;
        }
        match name {
            HeaderName::Via if top_via.is_some() => {
                let stamped = top_via.take().unwrap_or_default();
                let rest = value_after_first(value);
                if rest.is_empty() {
                    line(out, raw_name, stamped);
                } else {
                    line(out, raw_name, &[stamped, b", ", rest].concat());
                }
            }
            HeaderName::MaxForwards => {
                saw_max_forwards = true;
                let hops = req.max_forwards().unwrap_or(70).saturating_sub(1);
                line(out, b"Max-Forwards", hops.to_string().as_bytes());
            }
            HeaderName::Route if to_pop > 0 => {
                let mut rest = value;
                while to_pop > 0 && !rest.is_empty() {
                    rest = value_after_first(rest);
                    to_pop = to_pop.saturating_sub(1);
                }
                if !rest.is_empty() {
                    line(out, raw_name, rest);
                }
            }
            _ => line(out, raw_name, value),
        }
    }
    if !saw_max_forwards {
        line(out, b"Max-Forwards", b"70");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(req.body());
}

/// Writes `resp` without its first Via value (ours) into `out`.
pub fn write_forwarded_response(resp: &SipMessage, out: &mut BytesMut) {
    out.extend_from_slice(resp.start_line());
    out.extend_from_slice(b"\r\n");
    let mut via_popped = false;
    for (name, raw_name, value) in resp.header_lines() {
        if name == HeaderName::Via && !via_popped {
            via_popped = true;
            let rest = value_after_first(value);
            if !rest.is_empty() {
                line(out, raw_name, rest);
            }
            continue;
        }
        line(out, raw_name, value);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(resp.body());
}

/// The CANCEL for a forwarded INVITE (RFC 3261 §9.1): the same Request-URI, top Via, Route set,
/// From, To and Call-ID, CSeq number with method CANCEL, no body.
pub fn write_cancel(invite: &SipMessage, out: &mut BytesMut) {
    out.extend_from_slice(b"CANCEL ");
    out.extend_from_slice(invite.request_uri().unwrap_or_default());
    out.extend_from_slice(b" SIP/2.0\r\n");
    if let Some(via) = first_value(invite, HeaderName::Via) {
        line(out, b"Via", via);
    }
    for route in invite.headers(HeaderName::Route) {
        line(out, b"Route", route);
    }
    for name in [HeaderName::From, HeaderName::To, HeaderName::CallId] {
        if let Some(v) = invite.header(name) {
            line(out, name.as_str().as_bytes(), v);
        }
    }
    let seq = invite.cseq().map_or(1, |c| c.seq);
    line(out, b"CSeq", format!("{seq} CANCEL").as_bytes());
    line(out, b"Max-Forwards", b"70");
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
}

/// The first comma-separated value of the first `name` header, if any.
pub fn first_value(msg: &SipMessage, name: HeaderName) -> Option<&[u8]> {
    msg.header(name).and_then(|v| comma_values(v).next()).map(<[u8]>::trim_ascii)
}

/// The second Via value (where a response goes after ours is removed).
pub fn second_via(msg: &SipMessage) -> Option<&[u8]> {
    msg.values(HeaderName::Via).nth(1).map(<[u8]>::trim_ascii)
}

fn value_after_first(value: &[u8]) -> &[u8] {
    let mut values = comma_values(value);
    let first = values.next().unwrap_or_default();
    // The remainder starts right after the first value and its comma.
    let offset = (first.as_ptr() as usize).saturating_sub(value.as_ptr() as usize).saturating_add(first.len());
    let rest = value.get(offset..).unwrap_or_default();
    let rest = rest.trim_ascii_start();
    rest.strip_prefix(b",").unwrap_or(rest).trim_ascii()
}

fn line(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn parse(s: &str) -> SipMessage {
        SipMessage::parse(Bytes::from(s.replace('\n', "\r\n"))).expect("valid")
    }

    const INVITE: &str = "INVITE sip:101@127.0.0.1:5060 SIP/2.0\n\
        Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-pbx-1\n\
        Route: <sip:127.0.0.1:5060;lr>, <sip:10.0.0.9;lr>\n\
        Max-Forwards: 70\n\
        From: <sip:79161234567@pbx>;tag=a\n\
        To: <sip:101@pbx>\n\
        Call-ID: c1\n\
        CSeq: 1 INVITE\n\
        X-Call-Id: pbx-77\n\
        Content-Length: 5\n\
        \n\
        v=0\n";

    #[test]
    fn a_forwarded_request_gets_via_record_route_and_one_hop_less() {
        let req = parse(INVITE);
        let mut out = BytesMut::new();
        let rr: &[&[u8]] = &[b"<sip:127.0.0.1:5060;lr>"];
        let edit = RequestEdit { request_uri: Some(b"sip:101@127.0.0.1:6001"), via: b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-cg-1", record_route: rr, pop_route: 1, ..Default::default() };
        write_forwarded_request(&req, &edit, &mut out);
        let fwd = SipMessage::parse(out.freeze()).expect("the output parses");
        assert_eq!(fwd.request_uri(), Some(&b"sip:101@127.0.0.1:6001"[..]));
        let vias: Vec<_> = fwd.values(HeaderName::Via).collect();
        assert_eq!(vias.len(), 2);
        assert_eq!(fwd.top_via().and_then(|v| v.param(b"branch")), Some(&b"z9hG4bK-cg-1"[..]));
        assert_eq!(fwd.max_forwards(), Some(69));
        assert_eq!(fwd.values(HeaderName::Route).collect::<Vec<_>>(), vec![&b"<sip:10.0.0.9;lr>"[..]]);
        assert_eq!(fwd.header(HeaderName::RecordRoute), Some(&b"<sip:127.0.0.1:5060;lr>"[..]));
        assert_eq!(fwd.header_by_name(b"X-Call-Id"), Some(&b"pbx-77"[..]));
        assert_eq!(fwd.body(), b"v=0\r\n");
    }

    #[test]
    fn a_missing_max_forwards_becomes_70_and_a_single_route_disappears() {
        let req = parse(&INVITE.replace("Max-Forwards: 70\n", "").replace(", <sip:10.0.0.9;lr>", ""));
        let mut out = BytesMut::new();
        write_forwarded_request(&req, &RequestEdit { via: b"SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-x", pop_route: 1, ..Default::default() }, &mut out);
        let fwd = SipMessage::parse(out.freeze()).expect("the output parses");
        assert_eq!(fwd.max_forwards(), Some(70));
        assert_eq!(fwd.header(HeaderName::Route), None);
        assert_eq!(fwd.request_uri(), Some(&b"sip:101@127.0.0.1:5060"[..]));
    }

    #[test]
    fn the_stamped_top_via_replaces_the_first_value_only() {
        let req = parse(&INVITE.replace("Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-pbx-1\n", "Via: SIP/2.0/UDP 10.0.0.5;rport;branch=z9hG4bK-ph, SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-b\nVia: SIP/2.0/UDP 10.0.0.10;branch=z9hG4bK-c\n"));
        let mut out = BytesMut::new();
        let stamped = b"SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK-ph;received=192.0.2.1;rport=4000";
        write_forwarded_request(&req, &RequestEdit { via: b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-x", top_via: Some(stamped), ..Default::default() }, &mut out);
        let fwd = SipMessage::parse(out.freeze()).expect("the output parses");
        let vias: Vec<_> = fwd.values(HeaderName::Via).map(<[u8]>::trim_ascii).collect();
        assert_eq!(vias, [&b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-x"[..], stamped, b"SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-b", b"SIP/2.0/UDP 10.0.0.10;branch=z9hG4bK-c"]);
    }

    #[test]
    fn a_cancel_copies_the_invites_routing_headers() {
        let req = parse(INVITE);
        let mut out = BytesMut::new();
        write_cancel(&req, &mut out);
        let c = SipMessage::parse(out.freeze()).expect("the CANCEL parses");
        assert_eq!(c.method(), Some(super::super::Method::Cancel));
        assert_eq!(c.request_uri(), req.request_uri());
        assert_eq!(c.top_via().and_then(|v| v.param(b"branch")), Some(&b"z9hG4bK-pbx-1"[..]));
        assert_eq!(c.values(HeaderName::Route).count(), 2);
        assert_eq!(c.cseq().map(|s| s.seq), Some(1));
        assert!(c.body().is_empty());
    }

    #[test]
    fn a_forwarded_response_loses_only_the_top_via() {
        let resp = parse(
            "SIP/2.0 180 Ringing\n\
             Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-cg-1, SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-pbx-1\n\
             Record-Route: <sip:127.0.0.1:5060;lr>\n\
             From: <sip:79161234567@pbx>;tag=a\n\
             To: <sip:101@pbx>;tag=b\n\
             Call-ID: c1\n\
             CSeq: 1 INVITE\n\
             Content-Length: 0\n\n",
        );
        assert_eq!(second_via(&resp), Some(&b"SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-pbx-1"[..]));
        let mut out = BytesMut::new();
        write_forwarded_response(&resp, &mut out);
        let fwd = SipMessage::parse(out.freeze()).expect("the output parses");
        assert_eq!(fwd.status(), Some(180));
        assert_eq!(fwd.top_via().and_then(|v| v.param(b"branch")), Some(&b"z9hG4bK-pbx-1"[..]));
        assert_eq!(fwd.values(HeaderName::Via).count(), 1);
        assert_eq!(fwd.header(HeaderName::RecordRoute), Some(&b"<sip:127.0.0.1:5060;lr>"[..]));
    }
}
