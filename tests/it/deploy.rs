//! `deploy/`: the production example configuration passes `callgate check-config` (with real
//! certificate files where it names them), and the systemd unit is valid for systemd and keeps
//! its hardening.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_callgate");

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn the_production_example_configuration_passes_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("tls");
    let made = Command::new(BIN).args(["gen-cert", "--out"]).arg(&certs).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let check = |with_certs: bool| {
        let mut cmd = Command::new(BIN);
        cmd.env_clear().arg("check-config").arg("--config").arg(repo("deploy/callgate.toml"));
        if with_certs {
            // The example names /etc/callgate/tls/...; point those keys at real files here.
            for key in ["SIP__TLS_CERT", "HTTP__TLS_CERT"] {
                cmd.env(format!("CALLGATE__{key}"), certs.join("cert.pem"));
            }
            for key in ["SIP__TLS_KEY", "HTTP__TLS_KEY"] {
                cmd.env(format!("CALLGATE__{key}"), certs.join("key.pem"));
            }
        }
        cmd.output().unwrap()
    };
    let ok = check(true);
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    // Without the files it names, the same file is refused, every missing file named.
    let missing = check(false);
    assert_eq!(missing.status.code(), Some(64));
    let err = String::from_utf8_lossy(&missing.stderr);
    for key in ["sip.tls_cert", "sip.tls_key", "http.tls_cert", "http.tls_key"] {
        assert!(err.contains(key), "{key}: {err}");
    }
}

#[test]
fn the_systemd_unit_is_valid_and_hardened() {
    let unit = std::fs::read_to_string(repo("deploy/callgate.service")).unwrap();
    for line in [
        "User=callgate",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "ReadWritePaths=/var/lib/callgate",
        "ExecStartPre=/usr/local/bin/callgate check-config --config /etc/callgate/callgate.toml",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing from the unit");
    }
    // systemd's own check, with the binary where the unit expects it replaced by the built one.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("callgate.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/callgate", BIN)).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&copy).output().expect("systemd-analyze (Debian's systemd; scripts/test.sh installs it)");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && !said.contains("callgate.service:"), "systemd-analyze verify:\n{said}");
}
