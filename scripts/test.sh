#!/usr/bin/env bash
# Runs callgate's whole test suite on a fresh machine: installs what the tests need when it is
# missing (SIPp from Debian's sip-tester, Kamailio and baresip for the real-phone tests), then
# runs `cargo test`. Needs root (or sudo) only when something must be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
# Real phones (tests/it/phones): Kamailio plays the PBX's registrar, baresip the agents' phones
# (baresip-core: the binary and its modules, without the GUI). They fail, not skip, when missing.
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || need+=(kamailio)
command -v baresip >/dev/null 2>&1 || need+=(baresip-core)
# Browser tests (tests/it/browser.rs, settings_page.rs): Debian's Chromium, driven by playwright-core (never a
# downloaded browser). They fail, not skip, when these are missing.
[ -x /usr/bin/chromium ] || [ -n "${CHROMIUM:-}" ] || need+=(chromium)
# ... and node/npm to run them (tests/browser/*.mjs: the widget, the settings page and a SIP.js page).
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
# Real phones (tests/it/phones/linphone): Debian's linphone-cli (its linphone-daemon), with
# Kamailio as the PBX. They fail, not skip, when missing.
command -v linphone-daemon >/dev/null 2>&1 || need+=(linphone-cli)
# deploy/callgate.service is checked with `systemd-analyze verify` (tests/it/deploy.rs).
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
if ((${#need[@]})); then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# playwright-core, and SIP.js for the SIP.js page (tests/it/browser_sipjs.rs).
if [ ! -f tests/browser/node_modules/playwright-core/package.json ] || [ ! -f tests/browser/node_modules/sip.js/package.json ]; then
  echo "installing: tests/browser node modules (npm ci)"
  npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
fi

# The SIP core stays sans-IO (STYLE.md): no tokio, no clock reads, no sockets in src/sip/core
# (`Instant` as a type is fine: time is passed in; tests may take one base instant).
if grep -rnE 'tokio|Instant::now|SystemTime|std::net::(Udp|Tcp)' src/sip/core | grep -v '/tests/' | grep -vE ':[0-9]+:\s*//'; then
  echo "src/sip/core must stay sans-IO (found the lines above)" >&2; exit 1
fi

# One rustls crypto provider (ring) for the whole binary (issue 8): aws-lc-rs must not be built,
# by callgate or by the workspace's bitrix24 crate.
if cargo tree --locked --workspace -e normal,build -i aws-lc-rs >/dev/null 2>&1; then
  echo "aws-lc-rs is in the dependency tree: ring must stay the only rustls crypto provider" >&2; exit 1
fi

# Two cores: one test binary at a time, tests inside it in parallel.
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# Benches are built and run once in test mode (criterion checks each bench runs; the latency
# bench only measures under `cargo bench`).
cargo test --locked --bench sip --bench decide_latency
# The workspace: callgate and crates/bitrix24; then the documentation examples (the crate's;
# callgate has none), built with the same features, so nothing is compiled twice.
cargo test --locked --workspace --lib --bins --tests -- --test-threads="${TEST_THREADS:-4}"
cargo test --locked --workspace --doc
