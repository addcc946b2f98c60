//! TLS for every listener, with rustls and one crypto provider (ring) for the whole binary.
//!
//! - [`server_config`] loads a PEM certificate chain and key into a rustls `ServerConfig` (SIP
//!   over TLS, HTTPS/WSS on the HTTP listener). Errors name the file, never its contents.
//! - [`TlsHandshaker`] runs HTTPS handshakes in each connection's own task (at most
//!   [`MAX_HANDSHAKES`] at once, each within [`HANDSHAKE_TIMEOUT`]), so one slow or silent client
//!   never holds up the HTTP accept loop.
//! - [`client_config`] is how callgate dials TLS itself (a PBX over SIP TLS): platform roots
//!   plus `sip.tls_ca_file`, certificates always verified.
//! - [`install_crypto_provider`] installs ring as the process's rustls provider (`app` at start,
//!   the tests; the `bitrix24` crate's client builder installs the same one if none is set).
//! - [`dev_pki`] makes a throw-away development CA and a server certificate signed by it
//!   (`callgate gen-cert`, and the tests). No key is ever committed: see `certs/README.md`.
//!
//! Depends on nothing else in the crate.

mod listener;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use listener::TlsHandshaker;

/// Handshakes in progress at most per listener; more connections wait for their turn (within
/// [`HANDSHAKE_TIMEOUT`]).
pub const MAX_HANDSHAKES: usize = 256;
/// A client that has not finished its handshake within this is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {path}: {message}")]
    Pem {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the certificate/key pair.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing generated files failed.
    #[error("writing the certificate files: {0}")]
    Io(#[from] std::io::Error),
}

/// The process's one crypto provider (ring), also for configs built before it is installed.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process's one rustls crypto provider (reqwest is built without one).
/// Idempotent; call before building any TLS client or server.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A server config from a PEM chain and a PEM key (PKCS#8, PKCS#1 or SEC1), offering `alpn`
/// (e.g. `[b"http/1.1"]`; empty for SIP).
///
/// # Errors
/// [`TlsError::Pem`] for unreadable or empty files, [`TlsError::Rustls`] for a key that does not
/// match the certificate or is unsupported.
pub fn server_config(
    cert: &Path,
    key: &Path,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let pem_err = |what, message: String| TlsError::Pem {
        what,
        path: cert_or_key(what, cert, key),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_err("certificate", e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err("certificate", e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_err("certificate", "no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err("key", e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The DNS names a PEM certificate (its first, the leaf) is valid for, lowercase: the names peers
/// verifying it know this host by. Empty when the file cannot be read or parsed (the listener's
/// own set-up reports that).
pub fn dns_names(cert: &Path) -> Vec<String> {
    let Some(Ok(leaf)) = CertificateDer::pem_file_iter(cert).ok().and_then(|mut it| it.next()) else { return Vec::new() };
    let Ok(parsed) = webpki::EndEntityCert::try_from(&leaf) else { return Vec::new() };
    parsed.valid_dns_names().map(str::to_ascii_lowercase).collect()
}

/// A client config for dialling TLS servers (a PBX over SIP TLS): certificates verified against
/// the platform's roots plus the CA certificate(s) in the PEM file `extra_roots`, if given.
///
/// # Errors
/// [`TlsError::Pem`] for an unreadable or empty `extra_roots`, [`TlsError::Rustls`] when no root
/// is left to trust (no system roots and no extra ones) or one is unusable.
pub fn client_config(extra_roots: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = Vec::new();
    if let Some(path) = extra_roots {
        let pem_err = |message: String| TlsError::Pem { what: "certificate", path: path.display().to_string(), message };
        roots = CertificateDer::pem_file_iter(path).map_err(|e| pem_err(e.to_string()))?.collect::<Result<_, _>>().map_err(|e| pem_err(e.to_string()))?;
        if roots.is_empty() {
            return Err(pem_err("no CERTIFICATE block".into()));
        }
    }
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(roots, provider())?;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn cert_or_key(what: &str, cert: &Path, key: &Path) -> String {
    if what == "key" { key } else { cert }.display().to_string()
}

/// A development CA and a server certificate it signed, as PEM.
pub struct DevPki {
    /// The CA certificate: what clients (browsers, SIP phones, `crm.ca_file`) trust.
    pub ca_pem: String,
    /// The server certificate followed by the CA certificate (the chain to serve).
    pub cert_pem: String,
    /// The server's private key (PKCS#8). Keep it out of version control.
    pub key_pem: String,
}

impl std::fmt::Debug for DevPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevPki")
            .field("key_pem", &"***")
            .finish_non_exhaustive()
    }
}

/// A fresh CA (its key is thrown away) and a server certificate for `names` (DNS names or IP
/// addresses, e.g. `localhost`, `127.0.0.1`) signed by it.
///
/// # Errors
/// [`TlsError::Generate`] for a name rcgen cannot encode.
pub fn dev_pki(names: &[String]) -> Result<DevPki, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "callgate development CA");
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let mut leaf_params = CertificateParams::new(names.to_vec())?;
    leaf_params.distinguished_name.push(
        DnType::CommonName,
        names.first().map_or("callgate", String::as_str),
    );
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;
    Ok(DevPki {
        ca_pem: ca_cert.pem(),
        cert_pem: format!("{}{}", leaf.pem(), ca_cert.pem()),
        key_pem: leaf_key.serialize_pem(),
    })
}

/// Writes `dev_pki(names)` into `dir` as `ca.pem`, `cert.pem` and `key.pem` (mode 0600).
///
/// # Errors
/// [`TlsError::Generate`] or [`TlsError::Io`].
pub fn write_dev_pki(dir: &Path, names: &[String]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let pki = dev_pki(names)?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("ca.pem"), &pki.ca_pem)?;
    std::fs::write(dir.join("cert.pem"), &pki.cert_pem)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(dir.join("key.pem"))?;
    f.write_all(pki.key_pem.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_loads_as_a_server_config() {
        let dir = tempfile::tempdir().unwrap();
        write_dev_pki(dir.path(), &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let config = server_config(
            &dir.path().join("cert.pem"),
            &dir.path().join("key.pem"),
            &[b"http/1.1"],
        )
        .unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn the_dns_names_of_a_certificate_are_read_and_ip_addresses_are_not_names() {
        let dir = tempfile::tempdir().unwrap();
        write_dev_pki(dir.path(), &["SIP.Example.com".into(), "localhost".into(), "127.0.0.1".into()]).unwrap();
        assert_eq!(dns_names(&dir.path().join("cert.pem")), ["sip.example.com", "localhost"]);
        assert!(dns_names(&dir.path().join("missing.pem")).is_empty());
    }

    #[test]
    fn a_missing_or_empty_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("empty.pem"), "").unwrap();
        let err = server_config(
            &dir.path().join("empty.pem"),
            &dir.path().join("nokey.pem"),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("empty.pem"), "{err}");
        write_dev_pki(dir.path(), &["localhost".into()]).unwrap();
        let err = server_config(
            &dir.path().join("cert.pem"),
            &dir.path().join("nokey.pem"),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("nokey.pem"), "{err}");
    }

    #[test]
    fn debug_of_the_pki_hides_the_key() {
        let pki = dev_pki(&["localhost".into()]).unwrap();
        assert!(!format!("{pki:?}").contains("PRIVATE"));
        assert!(pki.key_pem.contains("PRIVATE KEY"));
    }
}
