//! The settings types and their JSON (snake_case, unknown fields rejected).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::Secret;

/// A portal's id in the store.
pub type PortalId = i64;
/// A Bitrix24 user id.
pub type UserId = u64;

/// A connected Bitrix24 portal ("credentials").
#[derive(Debug, Clone, PartialEq)]
pub struct Portal {
    /// Store id.
    pub id: PortalId,
    /// Optional display name, only to tell portals apart.
    pub name: Option<String>,
    /// Normalised `https://host/`.
    pub domain: String,
    /// How callgate authenticates to the portal, once known.
    pub auth: Option<Auth>,
    /// The per-portal settings.
    pub settings: PortalSettings,
}

/// Authentication towards Bitrix24.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    /// Incoming webhook: the URL carries the secret.
    Webhook {
        /// `https://portal/rest/<user>/<token>/`.
        url: Secret,
    },
    /// OAuth application; tokens arrive with the install event.
    OAuth {
        /// `client_id` of the app.
        client_id: String,
        /// `client_secret` of the app.
        client_secret: Secret,
        /// The OAuth server, `https://oauth.bitrix.info/` by default.
        oauth_server: String,
    },
}

/// What shows instead of a secret in API answers.
pub const MASK: &str = "***";

impl Auth {
    /// The JSON shown by the API: secrets masked (`/rest/1/***/`, `"client_secret": "***"`).
    pub fn masked(&self) -> AuthInput {
        match self {
            Self::Webhook { url } => AuthInput { webhook_url: Some(mask_webhook(url.expose())), oauth: None },
            Self::OAuth { client_id, oauth_server, .. } => AuthInput {
                webhook_url: None,
                oauth: Some(OAuthInput {
                    client_id: client_id.clone(),
                    client_secret: MASK.into(),
                    oauth_server: Some(oauth_server.clone()),
                }),
            },
        }
    }
}

/// `https://h/rest/1/abc/` -> `https://h/rest/1/***/`.
pub fn mask_webhook(url: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(i) => format!("{}/{MASK}/", &trimmed[..i]),
        None => MASK.into(),
    }
}

/// Body of `POST /portals` and `PUT /portals/{id}`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalInput {
    /// Optional display name.
    #[serde(default)]
    #[schema(max_length = 100)]
    pub name: Option<String>,
    /// Portal domain, any of the accepted spellings; normalised to `https://host/`.
    #[schema(example = "comagic.bitrix24.ru")]
    pub domain: String,
    /// Optional on create; omitted (or sent back masked) on update keeps the stored secret.
    #[serde(default)]
    pub auth: Option<AuthInput>,
}

/// `{"webhook_url": ".."}` or `{"oauth": {..}}`: exactly one. Secrets are write-only: answers
/// show them masked (`***`), and the masked value sent back keeps the stored one.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(max_properties = 1)]
pub struct AuthInput {
    /// Incoming webhook URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "https://example.bitrix24.ru/rest/1/abc123/")]
    pub webhook_url: Option<String>,
    /// OAuth application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthInput>,
}

/// OAuth application fields.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuthInput {
    /// `client_id` (`local.…` or `app.…`).
    pub client_id: String,
    /// `client_secret`; `***` on update keeps the stored one.
    pub client_secret: String,
    /// OAuth server; default `https://oauth.bitrix.info/`.
    #[serde(default)]
    #[schema(default = "https://oauth.bitrix.info/")]
    pub oauth_server: Option<String>,
}

/// The portal as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct PortalView {
    /// Store id.
    #[schema(value_type = i64)]
    pub id: PortalId,
    /// Display name.
    pub name: Option<String>,
    /// Normalised domain.
    pub domain: String,
    /// Masked auth, or null.
    pub auth: Option<AuthInput>,
    /// Whether the integration is active (from the settings).
    pub active: bool,
}

impl From<&Portal> for PortalView {
    fn from(p: &Portal) -> Self {
        Self {
            id: p.id,
            name: p.name.clone(),
            domain: p.domain.clone(),
            auth: p.auth.as_ref().map(Auth::masked),
            active: p.settings.active,
        }
    }
}

/// Telephony mode of a portal.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TelephonyMode {
    /// Agents on SIP phones behind the edge proxy.
    #[default]
    Ip,
    /// Agents in the browser widget.
    Webrtc,
}

/// Who becomes responsible on an answered, transferred call.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AssignTo {
    /// The first employee who talked with the customer.
    #[default]
    First,
    /// The last one.
    Last,
}

/// A UTM tag that CallTracking may pass on.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UtmTag {
    /// utm_source
    UtmSource,
    /// utm_medium
    UtmMedium,
    /// utm_campaign
    UtmCampaign,
    /// utm_content
    UtmContent,
    /// utm_term
    UtmTerm,
}

impl UtmTag {
    /// All five, in their usual order.
    pub const ALL: [Self; 5] = [Self::UtmSource, Self::UtmMedium, Self::UtmCampaign, Self::UtmContent, Self::UtmTerm];

    /// The Bitrix24 lead field (`UTM_SOURCE` …).
    pub fn crm_field(self) -> &'static str {
        match self {
            Self::UtmSource => "UTM_SOURCE",
            Self::UtmMedium => "UTM_MEDIUM",
            Self::UtmCampaign => "UTM_CAMPAIGN",
            Self::UtmContent => "UTM_CONTENT",
            Self::UtmTerm => "UTM_TERM",
        }
    }
}

/// Per-portal settings: `GET/PUT /portals/{id}/settings`. Missing fields take their defaults;
/// `active: true` needs both default responsibles.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields, default)]
#[schema(default)]
pub struct PortalSettings {
    /// "Integration active": off by default; while off nothing happens for the portal.
    pub active: bool,
    /// IP telephony or WebRTC widget.
    pub telephony_mode: TelephonyMode,
    /// Incoming calls block.
    pub incoming: IncomingSettings,
    /// Outgoing calls block.
    pub outgoing: OutgoingSettings,
    /// Other block.
    pub other: OtherSettings,
    /// Talk shorter than this (seconds) does not count as a conversation.
    #[schema(maximum = 3600)]
    pub min_talk_seconds: u32,
    /// Addresses (IP or CIDR: `10.0.0.2`, `192.0.2.0/28`) allowed to use the redirect listener and
    /// the PBX side of the proxy; nothing is trusted by default.
    pub trusted_pbx: Vec<String>,
    /// The PBX's SIP address, `host:port`, optionally with the transport callgate reaches it
    /// over (`10.0.0.2:5060;transport=tcp`: `udp`, the default, `tcp` or `tls`); empty: none yet
    /// (nothing is sent to a PBX, and no address is trusted as one).
    #[schema(examples("10.0.0.2:5060", "pbx.example.com:5061;transport=tls"))]
    pub pbx_host: String,
    /// The SIP domains the portal's phones are configured with (the PBX's host names, e.g.
    /// `pbx.example.com`): a phone's request naming one keeps its Request-URI on the way to the
    /// PBX, and a REGISTER naming one in To picks this portal when several map its extension.
    /// Any other host (callgate's own address, a stranger's) is rewritten to `pbx_host`.
    /// At most 16, each a host name or an IP address.
    #[schema(max_items = 16)]
    pub sip_domains: Vec<String>,
    /// Header carrying the PBX's call id on agent legs.
    pub correlation_header: String,
    /// Request-URI user that asks for a routing decision.
    pub routing_user: String,
    /// Numbers of at most this many digits (and feature codes: `*97`, `#31#`) are not
    /// customers: a call with one on the far end is internal (nothing goes to Bitrix24). 4 by
    /// default; at most 6, so that no real subscriber number is ever taken for one.
    #[schema(maximum = 6)]
    pub internal_max_digits: u8,
}

/// The transport callgate reaches a portal's PBX over (`pbx_host`'s `;transport=` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PbxTransport {
    /// UDP (the default, as for any `sip:` URI without `transport=`).
    #[default]
    Udp,
    /// TCP, over a connection callgate opens (and keeps) to the PBX.
    Tcp,
    /// TLS over TCP, the PBX's certificate checked against the platform roots and `sip.tls_ca_file`.
    Tls,
}

impl PortalSettings {
    /// `pbx_host` without its parameters: `host:port` (what is resolved and put in URIs).
    pub fn pbx_host_port(&self) -> &str {
        split_pbx_host(&self.pbx_host).0
    }

    /// The transport `pbx_host` names (UDP when it names none, or one callgate does not know:
    /// validation refuses those).
    pub fn pbx_transport(&self) -> PbxTransport {
        split_pbx_host(&self.pbx_host).1.ok().flatten().unwrap_or_default()
    }

    /// The far end `number` of a call is not a customer (see `internal_max_digits`).
    pub fn is_internal_number(&self, number: &str) -> bool {
        crate::phone::is_internal_number(number, self.internal_max_digits)
    }
}

/// `10.0.0.2:5060;transport=tcp` -> (`10.0.0.2:5060`, `Ok(Some(Tcp))`). `Err` carries a
/// parameter that is not `transport=udp|tcp|tls` (case-insensitive).
pub(crate) fn split_pbx_host(pbx_host: &str) -> (&str, Result<Option<PbxTransport>, &str>) {
    let mut parts = pbx_host.split(';');
    let host_port = parts.next().unwrap_or_default().trim();
    let mut transport = Ok(None);
    for param in parts {
        let value = param.trim().split_once('=').filter(|(k, _)| k.trim().eq_ignore_ascii_case("transport")).map(|(_, v)| v.trim());
        let parsed = match value {
            Some(v) if v.eq_ignore_ascii_case("udp") => PbxTransport::Udp,
            Some(v) if v.eq_ignore_ascii_case("tcp") => PbxTransport::Tcp,
            Some(v) if v.eq_ignore_ascii_case("tls") => PbxTransport::Tls,
            _ => return (host_port, Err(param)),
        };
        if transport.is_ok_and(|t: Option<PbxTransport>| t.is_some()) {
            return (host_port, Err(param));
        }
        transport = Ok(Some(parsed));
    }
    (host_port, transport)
}

impl Default for PortalSettings {
    fn default() -> Self {
        Self {
            active: false,
            telephony_mode: TelephonyMode::Ip,
            incoming: IncomingSettings::default(),
            outgoing: OutgoingSettings::default(),
            other: OtherSettings::default(),
            min_talk_seconds: 0,
            // Nothing is trusted until the operator says what the PBX is: a default address
            // would hand the PBX's rights to whoever sends from it (a local reverse proxy, a
            // spoofed datagram).
            trusted_pbx: Vec::new(),
            pbx_host: String::new(),
            sip_domains: Vec::new(),
            correlation_header: "X-Call-Id".into(),
            routing_user: "pm-route".into(),
            internal_max_digits: 4,
        }
    }
}

/// Incoming calls.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields, default)]
#[schema(default)]
pub struct IncomingSettings {
    /// Route scenario calls to the caller's personal manager.
    pub forward_to_personal_manager: bool,
    /// Create a CRM entity on an incoming call.
    pub create_entity: bool,
    /// Responsible for missed calls and unmapped talkers; required to activate.
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub default_responsible: Option<UserId>,
    /// First or last talker.
    pub assign_responsible_to: AssignTo,
}

impl Default for IncomingSettings {
    fn default() -> Self {
        Self {
            forward_to_personal_manager: true,
            create_entity: true,
            default_responsible: None,
            assign_responsible_to: AssignTo::First,
        }
    }
}

/// Outgoing calls.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields, default)]
#[schema(default)]
pub struct OutgoingSettings {
    /// Create a CRM entity on an outgoing call.
    pub create_entity: bool,
    /// Responsible when the calling extension maps to no user; required to activate.
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub default_responsible: Option<UserId>,
}

/// Other settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields, default)]
#[schema(default)]
pub struct OtherSettings {
    /// Use CallTracking (pass UTM tags).
    pub calltracking: bool,
    /// Which UTM tags are passed while CallTracking is on (each at most once).
    pub utm_tags: Vec<UtmTag>,
    /// Post a message about the call to the employee's chat.
    pub chat_message: bool,
}

impl Default for OtherSettings {
    fn default() -> Self {
        Self { calltracking: false, utm_tags: UtmTag::ALL.to_vec(), chat_message: true }
    }
}

/// An employee mapping: Bitrix24 user <-> PBX extension.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Mapping {
    /// Store id.
    pub id: i64,
    /// Bitrix24 user id.
    #[schema(value_type = u64)]
    pub user_id: UserId,
    /// PBX extension.
    pub extension: String,
    /// Whether this user takes part in personal-manager forwarding.
    pub use_for_personal_manager: bool,
    /// Static contact for phones that do not register.
    pub contact: Option<String>,
}

/// Body of mapping create/update.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MappingInput {
    /// Bitrix24 user id.
    #[schema(value_type = u64, minimum = 1)]
    pub user_id: UserId,
    /// PBX extension: 1-32 characters, digits, letters, `* # + _ . -`.
    #[schema(min_length = 1, max_length = 32, example = "101")]
    pub extension: String,
    /// Whether this user takes part in personal-manager forwarding; defaults to true.
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub use_for_personal_manager: bool,
    /// Static contact for phones that do not register (`sip:101@10.0.0.5:5060`), or null.
    #[serde(default)]
    #[schema(example = "sip:101@10.0.0.5:5060")]
    pub contact: Option<String>,
}

fn yes() -> bool {
    true
}

/// A PBX line (called number) of the portal, with optional static UTM tags.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// The number, normalised to digits (E.164 without `+`); any common spelling is accepted.
    #[schema(example = "+7 495 123-45-67")]
    pub number: String,
    /// Static UTM values for calls to this line (1-255 characters each).
    #[serde(default)]
    pub utm: Option<BTreeMap<UtmTag, String>>,
}
