//! Authentication (bitrix24-rest.md §2, §10.1 items 3-5): incoming webhooks, OAuth apps and their
//! tokens, and the OAuth token server.
//!
//! The OAuth server lives at `<base>/oauth/token/` (also without the trailing slash), GET query
//! or POST form, `grant_type=refresh_token|authorization_code`. Access tokens last `token_ttl`
//! (default 1 h) on the fake clock; every refresh rotates the refresh token and (strict, default)
//! invalidates the old one. Old access tokens stay valid until they expire, as on Bitrix24.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::clock::Now;
use super::envelope::ApiError;
use super::params::Param;

/// The scopes granted to the default webhook and to installed apps.
pub const DEFAULT_SCOPES: &[&str] = &["telephony", "crm", "user", "im"];

#[derive(Clone, Debug)]
pub struct Webhook {
    pub user_id: u64,
    pub code: String,
    pub scopes: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct App {
    pub client_id: String,
    pub client_secret: String,
    /// Bitrix's numeric app id (`REST_APP_ID`).
    pub id: u64,
    pub name: String,
    pub application_token: String,
    pub scopes: Vec<String>,
    pub user_id: u64,
}

#[derive(Clone, Debug)]
struct AccessToken {
    client_id: String,
    user_id: u64,
    expires: f64,
    revoked: bool,
}

#[derive(Clone, Debug)]
struct RefreshToken {
    client_id: String,
    user_id: u64,
    valid: bool,
}

/// Who is calling: a webhook (acts as its user) or an app (acts as the token's user).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    Webhook {
        user_id: u64,
        code: String,
    },
    App {
        client_id: String,
        app_id: u64,
        name: String,
    },
}

impl Owner {
    /// A stable key for per-owner state (lines, dedup, operating limit).
    pub fn key(&self) -> String {
        match self {
            Self::Webhook { user_id, code } => format!("webhook:{user_id}:{code}"),
            Self::App { client_id, .. } => format!("app:{client_id}"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Caller {
    pub owner: Owner,
    pub user_id: u64,
    pub scopes: Vec<String>,
}

impl Caller {
    pub fn is_webhook(&self) -> bool {
        matches!(self.owner, Owner::Webhook { .. })
    }

    /// Scope check with the wording of §2.1 / §2.3; "" = no scope needed.
    pub fn check_scope(&self, scope: &str) -> Result<(), ApiError> {
        let has = |s: &str| self.scopes.iter().any(|x| x == s);
        let ok = match scope {
            "" => true,
            "user" => has("user") || has("user_basic") || has("user_brief"),
            s => has(s),
        };
        if ok {
            return Ok(());
        }
        let what = if self.is_webhook() {
            "webhook token"
        } else {
            "access token"
        };
        Err(ApiError::new(
            401,
            "insufficient_scope",
            format!("The request requires higher privileges than provided by the {what}"),
        ))
    }
}

/// A freshly issued token pair, as the OAuth server returns it.
#[derive(Clone, Debug)]
pub struct Issued {
    pub access_token: String,
    pub refresh_token: String,
    pub expires: i64,
    pub expires_in: u64,
    pub user_id: u64,
    pub scope: String,
}

#[derive(Debug)]
pub struct AuthState {
    pub webhooks: Vec<Webhook>,
    pub apps: Vec<App>,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
    codes: HashMap<String, (String, u64, f64)>,
    pub token_ttl: Duration,
    pub strict_rotation: bool,
    pub refresh_count: usize,
    /// The token answer names `member_id` (always, on Bitrix24; off only to test a client).
    pub answer_member_id: bool,
    next_app_id: u64,
}

impl Default for AuthState {
    fn default() -> Self {
        Self {
            webhooks: vec![Webhook {
                user_id: 1,
                code: "webhookcode".into(),
                scopes: owned(DEFAULT_SCOPES),
            }],
            apps: Vec::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            codes: HashMap::new(),
            token_ttl: Duration::from_secs(3600),
            strict_rotation: true,
            refresh_count: 0,
            answer_member_id: true,
            next_app_id: 3,
        }
    }
}

pub fn owned(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// 32 random hex characters.
pub fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

impl AuthState {
    pub fn register_app(&mut self, client_id: &str, secret: &str, scopes: Vec<String>) -> App {
        self.apps.retain(|a| a.client_id != client_id);
        let app = App {
            client_id: client_id.to_owned(),
            client_secret: secret.to_owned(),
            id: self.next_app_id,
            name: format!("App {client_id}"),
            application_token: random_hex(),
            scopes,
            user_id: 1,
        };
        self.next_app_id += 1;
        self.apps.push(app.clone());
        app
    }

    pub fn app(&self, client_id: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.client_id == client_id)
    }

    /// Mints an access + refresh token pair for an app's user.
    pub fn issue(&mut self, client_id: &str, user_id: u64, now: Now) -> Issued {
        let ttl = self.token_ttl.as_secs_f64();
        let (access, refresh) = (random_hex(), random_hex());
        let tok = AccessToken {
            client_id: client_id.to_owned(),
            user_id,
            expires: now.unix + ttl,
            revoked: false,
        };
        self.access.insert(access.clone(), tok);
        let rt = RefreshToken {
            client_id: client_id.to_owned(),
            user_id,
            valid: true,
        };
        self.refresh.insert(refresh.clone(), rt);
        let scope = self
            .app(client_id)
            .map(|a| a.scopes.join(","))
            .unwrap_or_default();
        Issued {
            access_token: access,
            refresh_token: refresh,
            expires: (now.unix + ttl).floor() as i64,
            expires_in: self.token_ttl.as_secs(),
            user_id,
            scope,
        }
    }

    /// An authorization code (valid 30 s) for the code grant.
    pub fn issue_code(&mut self, client_id: &str, user_id: u64, now: Now) -> String {
        let code = random_hex();
        self.codes.insert(
            code.clone(),
            (client_id.to_owned(), user_id, now.unix + 30.0),
        );
        code
    }

    pub fn expire_all(&mut self, now: Now) {
        self.access
            .values_mut()
            .for_each(|t| t.expires = t.expires.min(now.unix));
    }

    pub fn revoke_all(&mut self) {
        self.access.values_mut().for_each(|t| t.revoked = true);
    }

    /// Every refresh token issued so far stops working (180 days passed, or the app was
    /// removed): refreshes answer invalid_grant.
    pub fn invalidate_refresh_tokens(&mut self) {
        self.refresh.values_mut().for_each(|t| t.valid = false);
    }

    /// Webhook path credentials → the caller, or 401 INVALID_CREDENTIALS.
    pub fn webhook(&self, user: &str, code: &str) -> Result<Caller, ApiError> {
        let hook = self
            .webhooks
            .iter()
            .find(|w| w.user_id.to_string() == user && w.code == code);
        let hook = hook.ok_or_else(|| {
            ApiError::new(401, "INVALID_CREDENTIALS", "Invalid request credentials")
        })?;
        Ok(Caller {
            owner: Owner::Webhook {
                user_id: hook.user_id,
                code: hook.code.clone(),
            },
            user_id: hook.user_id,
            scopes: hook.scopes.clone(),
        })
    }

    /// An access token → the caller, or NO_AUTH_FOUND / invalid_token / expired_token (401).
    pub fn token(&self, token: &str, now: Now) -> Result<Caller, ApiError> {
        if token.is_empty() {
            return Err(ApiError::no_auth());
        }
        let invalid = || ApiError::new(401, "invalid_token", "Unable to get application by token");
        let t = self.access.get(token).ok_or_else(invalid)?;
        let app = self.app(&t.client_id).ok_or_else(invalid)?;
        if t.revoked {
            return Err(invalid());
        }
        if t.expires <= now.unix {
            return Err(ApiError::new(
                401,
                "expired_token",
                "The access token provided has expired",
            ));
        }
        Ok(Caller {
            owner: Owner::App {
                client_id: app.client_id.clone(),
                app_id: app.id,
                name: app.name.clone(),
            },
            user_id: t.user_id,
            scopes: app.scopes.clone(),
        })
    }

    /// The OAuth server: `(status, JSON body)`.
    pub fn token_endpoint(&mut self, p: &Param, now: Now, endpoints: &Endpoints) -> (u16, Value) {
        match self.grant(p, now) {
            Ok(issued) => {
                let mut body = endpoints.token_json(&issued);
                if !self.answer_member_id {
                    body.as_object_mut().map(|o| o.remove("member_id"));
                }
                (200, body)
            }
            Err((status, code, desc)) => {
                (status, json!({ "error": code, "error_description": desc }))
            }
        }
    }

    fn grant(&mut self, p: &Param, now: Now) -> Result<Issued, (u16, &'static str, &'static str)> {
        let text = |k: &str| p.get(k).and_then(Param::nonempty).unwrap_or_default();
        let (grant, client_id, secret) =
            (text("grant_type"), text("client_id"), text("client_secret"));
        if grant != "refresh_token" && grant != "authorization_code" {
            return Err((400, "invalid_request", "Unsupported grant_type"));
        }
        let app = self.app(&client_id).filter(|a| a.client_secret == secret);
        if app.is_none() {
            return Err((401, "invalid_client", "Invalid client credentials"));
        }
        let user_id = if grant == "refresh_token" {
            self.consume_refresh(&text("refresh_token"), &client_id)?
        } else {
            self.consume_code(&text("code"), &client_id, now)?
        };
        Ok(self.issue(&client_id, user_id, now))
    }

    fn consume_refresh(
        &mut self,
        token: &str,
        client_id: &str,
    ) -> Result<u64, (u16, &'static str, &'static str)> {
        let strict = self.strict_rotation;
        let rt = self
            .refresh
            .get_mut(token)
            .filter(|r| r.valid && r.client_id == client_id);
        let rt = rt.ok_or((400, "invalid_grant", "Invalid refresh token"))?;
        if strict {
            rt.valid = false;
        }
        self.refresh_count += 1;
        Ok(rt.user_id)
    }

    fn consume_code(
        &mut self,
        code: &str,
        client_id: &str,
        now: Now,
    ) -> Result<u64, (u16, &'static str, &'static str)> {
        match self.codes.remove(code) {
            Some((c, user, exp)) if c == client_id && exp > now.unix => Ok(user),
            _ => Err((400, "invalid_grant", "Invalid authorization code")),
        }
    }
}

/// The URLs the fake hands out in token responses and events.
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// `http://127.0.0.1:PORT/`
    pub base: String,
    /// `127.0.0.1:PORT`
    pub domain: String,
    pub member_id: String,
}

impl Endpoints {
    pub fn client_endpoint(&self) -> String {
        format!("{}rest/", self.base)
    }

    pub fn server_endpoint(&self) -> String {
        format!("{}rest/", self.base)
    }

    /// §2.2's refresh response.
    pub fn token_json(&self, t: &Issued) -> Value {
        json!({
            "access_token": t.access_token,
            "client_endpoint": self.client_endpoint(),
            "domain": self.domain,
            "expires": t.expires,
            "expires_in": t.expires_in,
            "member_id": self.member_id,
            "refresh_token": t.refresh_token,
            "scope": t.scope,
            "server_endpoint": self.server_endpoint(),
            "status": "L",
            "user_id": t.user_id,
        })
    }
}
