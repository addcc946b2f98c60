//! Certificate verification against a throw-away test CA: refused by default, accepted after
//! `with_root_ca`. The CA and the 127.0.0.1 server certificate are made with the `openssl` CLI
//! in a temporary directory at test time (no keys in the repository); without `openssl` the
//! test is skipped with a note.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Secret;
use crate::crm::{CrmClient, CrmError, Endpoint, Params};

struct Pki {
    ca_pem: Vec<u8>,
    leaf_pem: Vec<u8>,
    leaf_key_pem: Vec<u8>,
}

fn openssl(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A CA and a leaf for `IP:127.0.0.1`, or `None` when `openssl` is unavailable.
fn make_pki() -> Option<Pki> {
    let dir = tempfile::tempdir().ok()?;
    let d = dir.path();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca = [
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=callgate test CA",
        ],
        &[
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    ]
    .concat();
    let csr = [
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat();
    std::fs::write(
        d.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .ok()?;
    let sign = [
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
    ];
    if !(openssl(d, &ca) && openssl(d, &csr) && openssl(d, &sign)) {
        return None;
    }
    Some(Pki {
        ca_pem: std::fs::read(d.join("ca.pem")).ok()?,
        leaf_pem: std::fs::read(d.join("leaf.pem")).ok()?,
        leaf_key_pem: std::fs::read(d.join("leaf.key")).ok()?,
    })
}

/// A blocking TLS server thread that answers `connections` requests with `{"result":true}`.
fn serve_tls(pki: &Pki, connections: usize) -> SocketAddr {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pki.leaf_pem)
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(&pki.leaf_key_pem).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(tcp) = stream else { continue };
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            // A failed handshake (the client refusing our certificate) just ends this connection.
            let _ = answer_one(rustls::StreamOwned::new(conn, tcp));
        }
    });
    addr
}

fn answer_one(stream: impl Read + Write) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut content_length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;
    let answer = r#"{"result":true}"#;
    let mut stream = reader.into_inner();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
        answer.len()
    )?;
    stream.flush()
}

#[tokio::test]
async fn a_test_ca_is_trusted_only_when_added() {
    let Some(pki) = make_pki() else {
        eprintln!("openssl is not available: TLS verification test skipped");
        return;
    };
    let addr = serve_tls(&pki, 2);
    let ep = Endpoint::oauth(&format!("https://{addr}/rest/"), Secret::new("t")).unwrap();

    let strict = CrmClient::new().unwrap();
    let err = strict
        .call(&ep, "app.info", &Params::new())
        .await
        .unwrap_err();
    let CrmError::Network { message } = &err else {
        panic!("{err:?}")
    };
    assert!(message.to_lowercase().contains("certificate"), "{message}");

    let trusting = CrmClient::builder()
        .with_root_ca(pki.ca_pem.clone())
        .build()
        .unwrap();
    let resp = trusting
        .call(&ep, "app.info", &Params::new())
        .await
        .unwrap();
    assert_eq!(resp.result, serde_json::json!(true));
}
