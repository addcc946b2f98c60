//! REGISTER relayed to the PBX with Path, and the bindings the proxy learns from the PBX's 2xx.

use super::*;

/// Phone 102's REGISTER (Request-URI `ruri`, an optional Route), its Contact on 127.0.0.1:6002.
fn phone_register(ruri: &str, route: Option<&str>, cseq: u32, expires: u32) -> String {
    let route = route.map(|r| format!("Route: {r}\n")).unwrap_or_default();
    format!(
        "REGISTER {ruri} SIP/2.0\n\
         Via: SIP/2.0/UDP 127.0.0.1:6002;branch=z9hG4bK-reg-{cseq}\n\
         {route}\
         Max-Forwards: 70\n\
         From: <sip:102@127.0.0.1:5080>;tag=reg-tag\n\
         To: <sip:102@127.0.0.1:5080>\n\
         Call-ID: reg-1@phone\n\
         CSeq: {cseq} REGISTER\n\
         Contact: <sip:102@127.0.0.1:6002>\n\
         Expires: {expires}\n\
         Content-Length: 0\n\n"
    )
}

/// Phone 102 registers through callgate as its outbound proxy (Route: us, Request-URI the
/// PBX) and the PBX accepts; returns what reached the PBX and what came back to the phone.
fn register_through_outbound_route(h: &Harness, cseq: u32, expires: u32, ms: u64) -> (Sent, Sent) {
    let relayed = h.recv(
        PHONE_102,
        &phone_register("sip:127.0.0.1:5080", Some(OUR_ROUTE), cseq, expires),
        ms,
    );
    let at_pbx = relayed.one_to(PBX).clone();
    let contact = format!("<sip:102@127.0.0.1:6002>;expires={expires}");
    let accepted = h.recv_bytes(
        PBX,
        answer(&at_pbx, 200, "OK", &[("Contact", contact.as_bytes())]),
        ms + 10,
    );
    (relayed, accepted)
}

#[test]
fn a_register_is_relayed_to_the_pbx_with_path_and_the_pbxs_200_goes_back_to_the_phone() {
    // Arrange
    let h = Harness::new();

    // Act
    let (relayed, accepted) = register_through_outbound_route(&h, 1, 3600, 0);

    // Assert
    assert_eq!(
        relayed.lines(),
        [(
            PBX.to_owned(),
            "REGISTER sip:127.0.0.1:5080 SIP/2.0".to_owned()
        )]
    );
    let at_pbx = relayed.one_to(PBX);
    assert_eq!(header(at_pbx, HeaderName::Path), Some(path_route(PHONE_102, "102")));
    assert_eq!(
        header(at_pbx, HeaderName::Route),
        None,
        "our Route value popped"
    );
    assert_eq!(
        header(at_pbx, HeaderName::RecordRoute),
        None,
        "no Record-Route on a REGISTER"
    );
    assert!(vias(at_pbx)[0].starts_with("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK"));
    assert_eq!(
        accepted.lines(),
        [(PHONE_102.to_owned(), "SIP/2.0 200 OK".to_owned())]
    );
    assert_eq!(
        vias(accepted.one_to(PHONE_102)),
        ["SIP/2.0/UDP 127.0.0.1:6002;branch=z9hG4bK-reg-1"]
    );
}

#[test]
fn after_a_register_the_pbxs_invite_for_the_extension_goes_to_the_registered_contact() {
    // Arrange
    let h = Harness::new();
    register_through_outbound_route(&h, 1, 3600, 0);

    // Act
    let sent = h.recv(PBX, &pbx_invite("102", "in-2@pbx", "z9hG4bK-pbx-2"), 1_000);

    // Assert
    assert_eq!(
        sent.lines(),
        [
            (PBX.to_owned(), "SIP/2.0 100 Trying".to_owned()),
            (
                PHONE_102.to_owned(),
                "INVITE sip:102@127.0.0.1:6002 SIP/2.0".to_owned()
            ),
        ]
    );
    assert_eq!(
        header(sent.one_to(PHONE_102), HeaderName::RecordRoute),
        Some(dialog_route(PBX, PHONE_102, "in-2@pbx"))
    );
}

#[test]
fn a_register_with_expires_0_removes_the_binding() {
    // Arrange
    let h = Harness::new();
    register_through_outbound_route(&h, 1, 3600, 0);

    // Act
    let (relayed, accepted) = register_through_outbound_route(&h, 2, 0, 1_000);
    let sent = h.recv(PBX, &pbx_invite("102", "in-2@pbx", "z9hG4bK-pbx-2"), 2_000);

    // Assert
    assert_eq!(
        header(relayed.one_to(PBX), HeaderName::Expires).as_deref(),
        Some("0")
    );
    assert_eq!(
        accepted.lines(),
        [(PHONE_102.to_owned(), "SIP/2.0 200 OK".to_owned())]
    );
    assert_eq!(
        sent.lines(),
        [(
            PBX.to_owned(),
            "SIP/2.0 480 Temporarily Unavailable".to_owned()
        )]
    );
}

#[test]
fn a_binding_expires_with_the_registration() {
    // Arrange
    let h = Harness::new();
    register_through_outbound_route(&h, 1, 60, 0);

    // Act
    h.tick(60_010);
    let sent = h.recv(PBX, &pbx_invite("102", "in-2@pbx", "z9hG4bK-pbx-2"), 60_100);

    // Assert
    assert_eq!(
        sent.lines(),
        [(
            PBX.to_owned(),
            "SIP/2.0 480 Temporarily Unavailable".to_owned()
        )]
    );
}

#[test]
fn a_register_the_pbx_refuses_creates_no_binding() {
    // Arrange
    let h = Harness::new();
    let relayed = h.recv(
        PHONE_102,
        &phone_register("sip:127.0.0.1:5080", Some(OUR_ROUTE), 1, 3600),
        0,
    );
    let at_pbx = relayed.one_to(PBX).clone();

    // Act
    let refused = h.recv_bytes(PBX, answer(&at_pbx, 403, "Forbidden", &[]), 10);
    let sent = h.recv(PBX, &pbx_invite("102", "in-2@pbx", "z9hG4bK-pbx-2"), 1_000);

    // Assert
    assert_eq!(
        refused.lines(),
        [(PHONE_102.to_owned(), "SIP/2.0 403 Forbidden".to_owned())]
    );
    assert_eq!(
        sent.lines(),
        [(
            PBX.to_owned(),
            "SIP/2.0 480 Temporarily Unavailable".to_owned()
        )]
    );
}

#[test]
fn a_register_addressed_to_callgate_is_relayed_to_the_pbx_with_path() {
    // Arrange: phone 102 uses callgate as its registrar domain, as phones dial through it
    // (`INVITE sip:NUMBER@callgate`).
    let h = Harness::new();

    // Act
    let sent = h.recv(
        PHONE_102,
        &phone_register("sip:127.0.0.1:5060", None, 1, 3600),
        0,
    );

    // Assert
    let at_pbx = sent.one_to(PBX);
    assert_eq!(
        at_pbx.method(),
        Some(crate::sip::core::Method::Register),
        "{:?}",
        sent.lines()
    );
    assert_eq!(header(at_pbx, HeaderName::Path), Some(path_route(PHONE_102, "102")));
    // Once through callgate, not twice: one Via of ours, one Path, and the PBX's own address.
    assert_eq!(at_pbx.values(HeaderName::Path).count(), 1);
    assert_eq!(vias(at_pbx).len(), 2, "{:?}", vias(at_pbx));
    assert_eq!(at_pbx.request_uri(), Some(&b"sip:127.0.0.1:5080"[..]));
}

#[test]
fn an_invite_the_pbx_sends_along_the_path_reaches_the_phone() {
    // Arrange
    let h = Harness::new();
    register_through_outbound_route(&h, 1, 3600, 0);
    let invite = pbx_invite("102", "in-2@pbx", "z9hG4bK-pbx-2")
        .replace(
            "INVITE sip:102@127.0.0.1:5060",
            "INVITE sip:102@127.0.0.1:6002",
        )
        .replace(
            "Max-Forwards: 70\n",
            &format!("Route: {}\nMax-Forwards: 70\n", path_route(PHONE_102, "102")),
        );

    // Act
    let sent = h.recv(PBX, &invite, 1_000);

    // Assert
    assert_eq!(
        sent.lines(),
        [
            (PBX.to_owned(), "SIP/2.0 100 Trying".to_owned()),
            (
                PHONE_102.to_owned(),
                "INVITE sip:102@127.0.0.1:6002 SIP/2.0".to_owned()
            ),
        ]
    );
    let fwd = sent.one_to(PHONE_102);
    assert_eq!(header(fwd, HeaderName::Route), None);
    assert_eq!(
        header(fwd, HeaderName::RecordRoute),
        Some(dialog_route(PBX, PHONE_102, "in-2@pbx"))
    );
}

#[test]
fn a_binding_lasts_as_long_as_the_pbx_granted() {
    // Arrange: the phone asks for an hour, the PBX grants a minute.
    let h = Harness::new();
    let relayed = h.recv(
        PHONE_102,
        &phone_register("sip:127.0.0.1:5080", Some(OUR_ROUTE), 1, 3600),
        0,
    );
    let at_pbx = relayed.one_to(PBX).clone();
    h.recv_bytes(
        PBX,
        answer(
            &at_pbx,
            200,
            "OK",
            &[("Contact", b"<sip:102@127.0.0.1:6002>;expires=60")],
        ),
        10,
    );

    // Act
    h.tick(61_000);
    let sent = h.recv(PBX, &pbx_invite("102", "in-2@pbx", "z9hG4bK-pbx-2"), 61_100);

    // Assert
    assert_eq!(
        sent.lines(),
        [(
            PBX.to_owned(),
            "SIP/2.0 480 Temporarily Unavailable".to_owned()
        )]
    );
}

/// The office with `sip_domains` set: phones are configured with the PBX's name as their domain.
fn office_with_domain() -> Harness {
    let mut entry = office();
    entry.portal.settings.sip_domains = vec!["pbx.office.example".into()];
    Harness::with_portals(vec![PortalEntry::build(entry.portal, entry.by_extension.into_values().collect(), Vec::new())])
}

#[test]
fn a_register_naming_the_portals_sip_domain_reaches_the_pbx_as_written_with_only_our_path() {
    // Arrange: the usual outbound-proxy set-up, and a Path of the phone's own (which would make
    // the PBX send 102's calls wherever the phone liked).
    let h = office_with_domain();
    let register = phone_register("sip:pbx.office.example", Some(OUR_ROUTE), 1, 3600)
        .replace("@127.0.0.1:5080>", "@pbx.office.example>")
        .replace("Max-Forwards: 70\n", "Path: <sip:127.0.0.6:5060;lr>\nMax-Forwards: 70\n");

    // Act
    let sent = h.recv(PHONE_102, &register, 0);

    // Assert
    assert_eq!(sent.lines(), [(PBX.to_owned(), "REGISTER sip:pbx.office.example SIP/2.0".to_owned())]);
    let at_pbx = sent.one_to(PBX);
    let paths: Vec<String> = at_pbx.values(HeaderName::Path).map(text).collect();
    assert_eq!(paths, [path_route(PHONE_102, "102")], "callgate's Path only, once");
    assert_eq!(vias(at_pbx).len(), 2, "one Via of ours above the phone's: {:?}", vias(at_pbx));
}

#[test]
fn a_phones_request_naming_a_strangers_host_goes_to_its_pbx_with_the_pbxs_host() {
    // Arrange
    let h = office_with_domain();

    // Act: a REGISTER for another domain, and a call to a number at someone else's host.
    let register = h.recv(PHONE_102, &phone_register("sip:sip.victim.example", None, 1, 3600), 0);
    let invite = trust::invite_from(PHONE_101, "sip:555@127.0.0.6:5060", "s-1", "");
    let call = h.recv(PHONE_101, &invite, 10);

    // Assert
    assert_eq!(register.lines(), [(PBX.to_owned(), "REGISTER sip:127.0.0.1:5080 SIP/2.0".to_owned())]);
    assert_eq!(call.to(PBX).len(), 1, "{:?}", call.lines());
    assert_eq!(call.to(PBX)[0].request_uri(), Some(&b"sip:555@127.0.0.1:5080"[..]));
    assert!(call.to("127.0.0.6:5060").is_empty());
}

#[test]
fn a_path_routed_invite_belongs_to_the_registered_extension_not_the_contacts_user() {
    // Arrange: baresip's Contact user is `102-0x55c7...`, not the extension.
    let h = Harness::new();
    let register = phone_register("sip:127.0.0.1:5080", Some(OUR_ROUTE), 1, 3600).replace("Contact: <sip:102@", "Contact: <sip:102-0x55c7@");
    let relayed = h.recv(PHONE_102, &register, 0);
    let at_pbx = relayed.one_to(PBX).clone();
    h.recv_bytes(PBX, answer(&at_pbx, 200, "OK", &[("Contact", b"<sip:102-0x55c7@127.0.0.1:6002>;expires=3600")]), 10);
    let invite = pbx_invite("102", "in-p@pbx", "z9hG4bK-pbx-p")
        .replace("INVITE sip:102@127.0.0.1:5060", "INVITE sip:102-0x55c7@127.0.0.1:6002")
        .replace("Max-Forwards: 70\n", &format!("Route: {}\nMax-Forwards: 70\n", path_route(PHONE_102, "102")));

    // Act
    let sent = h.recv(PBX, &invite, 1_000);
    h.tick(1_050);

    // Assert
    assert_eq!(sent.one_to(PHONE_102).request_uri(), Some(&b"sip:102-0x55c7@127.0.0.1:6002"[..]));
    let calls = h.calls.list(10);
    let leg = calls.iter().flat_map(|c| c.legs.iter()).find(|l| l.leg.0.as_ref() == "in-p@pbx").expect("tracked");
    assert_eq!((leg.extension.as_ref(), leg.user), ("102", Some(12)), "{calls:#?}");
}

#[test]
fn a_relayed_register_says_it_supports_path_once() {
    // Arrange: phones rarely say so themselves (baresip and linphone do not); a strict registrar
    // would refuse the Path callgate inserts with 420.
    let h = Harness::new();
    let without = phone_register("sip:127.0.0.1:5080", Some(OUR_ROUTE), 1, 3600);
    let with = phone_register("sip:127.0.0.1:5080", Some(OUR_ROUTE), 2, 3600).replace("Max-Forwards: 70\n", "Supported: replaces, Path\nMax-Forwards: 70\n");

    // Act
    let first = h.recv(PHONE_102, &without, 0);
    let second = h.recv(PHONE_102, &with.replace("z9hG4bK-reg-2", "z9hG4bK-reg-2b"), 10);

    // Assert
    let supported = |s: &Sent| s.one_to(PBX).values(HeaderName::Supported).map(text).collect::<Vec<_>>();
    assert_eq!(supported(&first), ["path"]);
    assert_eq!(supported(&second), ["replaces", "Path"], "the phone's own support is enough");
}
