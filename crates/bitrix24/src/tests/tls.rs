//! Certificate verification against a throw-away test CA: refused by default, accepted after
//! `with_root_ca` (what `crm.ca_file` configures). The CA and the 127.0.0.1 server certificate are
//! made in memory with rcgen at test time (no keys in the repository).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Client, Endpoint, Error, Params, Secret};

struct Pki {
    ca_pem: Vec<u8>,
    leaf_pem: Vec<u8>,
    leaf_key_pem: Vec<u8>,
}

/// A CA and a leaf for `IP:127.0.0.1` signed by it.
fn make_pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "bitrix24 test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem().into_bytes(),
        leaf_pem: format!("{}{}", leaf.pem(), ca_cert.pem()).into_bytes(),
        leaf_key_pem: leaf_key.serialize_pem().into_bytes(),
    }
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
    let pki = make_pki();
    let addr = serve_tls(&pki, 2);
    let ep = Endpoint::oauth(&format!("https://{addr}/rest/"), Secret::new("t")).unwrap();

    let strict = Client::new().unwrap();
    let err = strict
        .call(&ep, "app.info", &Params::new())
        .await
        .unwrap_err();
    let Error::Network { message } = &err else {
        panic!("{err:?}")
    };
    assert!(message.to_lowercase().contains("certificate"), "{message}");

    let trusting = Client::builder()
        .with_root_ca(pki.ca_pem.clone())
        .build()
        .unwrap();
    let resp = trusting
        .call(&ep, "app.info", &Params::new())
        .await
        .unwrap();
    assert_eq!(resp.result, serde_json::json!(true));
}
