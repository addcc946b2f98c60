//! The fake portal's state and the method table. Everything here is synchronous and takes
//! `now` as a parameter; the HTTP side (`server.rs`) locks the state, calls in, and releases the
//! lock before any `.await`.

use std::time::Duration;

use serde_json::{json, Value};

use super::auth::{AuthState, Caller, Endpoints};
use super::clock::{Clock, Now};
use super::crm::{self, Crm, EntityKind};
use super::envelope::{ApiError, Output};
use super::events::{self, Events};
use super::faults::Faults;
use super::finish::{self, Attach};
use super::limits::Limits;
use super::lines;
use super::params::Param;
use super::record::Recorded;
use super::telephony::{self, Telephony};
use super::users::{self, Users};

/// Behaviour switches (bitrix24-rest.md §10 "make it configurable").
#[derive(Clone, Debug)]
pub struct Knobs {
    /// UTC offset of dates the portal prints (default +03:00).
    pub tz_offset: i32,
    /// Print empty `error` codes as this (e.g. `ERROR_CORE`, the documented form); None = `""`.
    pub empty_code_as: Option<String>,
    /// Unresolvable batch `$result[..]` references become "" instead of staying literal.
    pub unresolved_refs_empty: bool,
    /// 403 WRONG_AUTH_TYPE for telephony register/finish/externalLine.* via webhooks.
    pub app_only_telephony: bool,
    /// Chat message when finish has no ADD_TO_CHAT (docs: 1, older source: 0).
    pub add_to_chat_default: bool,
    /// Answer lead creation with this LEAD_CREATION_ERROR instead of creating a lead.
    pub lead_creation_error: Option<String>,
    /// App event deliveries carry access tokens (false = "triggered by automation").
    pub event_tokens: bool,
    /// Delay before each automatic event delivery.
    pub delivery_delay: Duration,
    /// `app.info` answers this `CODE` instead of the calling app's client_id.
    pub app_code: Option<String>,
    /// The online handlers are unreachable (callgate down): deliveries fail like a refused
    /// connection and, as at Bitrix24, are not retried. Offline queues are unaffected.
    pub handlers_down: bool,
    /// Former `host:port`s of a portal that moved: REST requests arriving for them (by `Host`)
    /// answer 302 with the new address, as a renamed Bitrix24 portal does (§1.6).
    pub moved_from: Vec<String>,
    /// Offline events are queued this long in the past: they waited at Bitrix24 while callgate
    /// was down (the fake's clock only moves forward).
    pub offline_backdate: Duration,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            tz_offset: 3 * 3600,
            empty_code_as: None,
            unresolved_refs_empty: false,
            app_only_telephony: false,
            add_to_chat_default: true,
            lead_creation_error: None,
            event_tokens: true,
            delivery_delay: Duration::ZERO,
            app_code: None,
            handlers_down: false,
            moved_from: Vec::new(),
            offline_backdate: Duration::ZERO,
        }
    }
}

#[derive(Debug)]
pub struct State {
    pub clock: Clock,
    pub knobs: Knobs,
    pub endpoints: Endpoints,
    pub auth: AuthState,
    pub users: Users,
    pub crm: Crm,
    pub tel: Telephony,
    pub events: Events,
    pub limits: Limits,
    pub faults: Faults,
    /// Every REST request.
    pub log: Vec<Recorded>,
    /// Every OAuth server request.
    pub oauth_log: Vec<Recorded>,
}

impl State {
    pub fn new(endpoints: Endpoints) -> Self {
        Self {
            clock: Clock::default(),
            knobs: Knobs::default(),
            endpoints,
            auth: AuthState::default(),
            users: Users::default(),
            crm: Crm::default(),
            tel: Telephony::default(),
            events: Events::default(),
            limits: Limits::default(),
            faults: Faults::default(),
            log: Vec::new(),
            oauth_log: Vec::new(),
        }
    }

    pub fn now(&self) -> Now {
        self.clock.now()
    }
}

/// The methods the fake knows, with the scope each needs ("" = none).
const METHODS: &[(&str, &str)] = &[
    ("telephony.externalcall.register", "telephony"),
    ("telephony.externalcall.finish", "telephony"),
    ("telephony.externalcall.show", "telephony"),
    ("telephony.externalcall.hide", "telephony"),
    ("telephony.externalcall.attachrecord", "telephony"),
    ("telephony.externalcall.searchcrmentities", "telephony"),
    ("telephony.externalline.add", "telephony"),
    ("telephony.externalline.get", "telephony"),
    ("telephony.externalline.update", "telephony"),
    ("telephony.externalline.delete", "telephony"),
    ("crm.contact.get", "crm"),
    ("crm.contact.list", "crm"),
    ("crm.contact.update", "crm"),
    ("crm.lead.get", "crm"),
    ("crm.lead.list", "crm"),
    ("crm.lead.update", "crm"),
    ("crm.company.get", "crm"),
    ("crm.company.list", "crm"),
    ("crm.company.update", "crm"),
    ("crm.duplicate.findbycomm", "crm"),
    ("user.get", "user"),
    ("im.notify.system.add", "im"),
    ("im.notify.personal.add", "im"),
    ("event.bind", ""),
    ("event.unbind", ""),
    ("event.get", ""),
    ("event.offline.get", ""),
    ("event.offline.clear", ""),
    ("batch", ""),
    ("scope", ""),
    ("profile", ""),
    ("app.info", ""),
    ("server.time", ""),
];

/// Methods only apps may call when `app_only_telephony` is on.
const APP_ONLY_TELEPHONY: &[&str] = &[
    "telephony.externalcall.register",
    "telephony.externalcall.finish",
    "telephony.externalline.add",
    "telephony.externalline.get",
    "telephony.externalline.update",
    "telephony.externalline.delete",
];

/// The scope a method needs, or None for an unknown method.
pub fn scope_of(method: &str) -> Option<&'static str> {
    METHODS.iter().find(|(m, _)| *m == method).map(|(_, s)| *s)
}

/// What a method call produced: an answer, or a download to do before answering.
pub enum Step {
    Done(Output),
    Fetch(finish::FetchJob),
}

impl State {
    /// Existence, scope and auth-type checks (404 / insufficient_scope / WRONG_AUTH_TYPE).
    pub fn admit_method(&self, caller: &Caller, method: &str) -> Result<(), ApiError> {
        let scope = scope_of(method).ok_or_else(ApiError::method_not_found)?;
        caller.check_scope(scope)?;
        if self.knobs.app_only_telephony
            && caller.is_webhook()
            && APP_ONLY_TELEPHONY.contains(&method)
        {
            return Err(ApiError::wrong_auth_type());
        }
        Ok(())
    }

    /// Runs one (non-batch) method.
    pub fn call(
        &mut self,
        caller: &Caller,
        method: &str,
        p: &Param,
        now: Now,
    ) -> Result<Step, ApiError> {
        let done = |r: Result<Value, ApiError>| r.map(|v| Step::Done(Output::of(v)));
        match method {
            "telephony.externalcall.register" => done(telephony::register(self, caller, p, now)),
            "telephony.externalcall.finish" => done(finish::finish(self, caller, p, now)),
            "telephony.externalcall.show" => done(telephony::show_hide(self, p, true)),
            "telephony.externalcall.hide" => done(telephony::show_hide(self, p, false)),
            "telephony.externalcall.attachrecord" => match finish::attach_record(self, p)? {
                Attach::Done(v) => Ok(Step::Done(Output::of(v))),
                Attach::Fetch(job) => Ok(Step::Fetch(job)),
            },
            "telephony.externalcall.searchcrmentities" => done(crm::search_crm_entities(self, p)),
            "telephony.externalline.add" => done(lines::add(&mut self.tel, caller, p)),
            "telephony.externalline.get" => done(Ok(lines::get(&self.tel, caller))),
            "telephony.externalline.update" => done(lines::update(&mut self.tel, caller, p)),
            "telephony.externalline.delete" => done(lines::delete(&mut self.tel, caller, p)),
            "crm.duplicate.findbycomm" => done(crm::find_by_comm(self, p)),
            "user.get" => users::user_get(&self.users, p).map(Step::Done),
            "im.notify.system.add" => done(users::notify(&mut self.users, caller, p, false)),
            "im.notify.personal.add" => done(users::notify(&mut self.users, caller, p, true)),
            m if m.starts_with("crm.") => self.crm_entity_method(m, p, now),
            m if m.starts_with("event.") => done(self.event_method(m, caller, p)),
            "scope" => done(Ok(json!(caller.scopes))),
            "profile" => done(Ok(users::profile(&self.users, caller))),
            "app.info" => done(Ok(self.app_info(caller))),
            "server.time" => done(Ok(json!(super::clock::iso(
                now.unix_secs(),
                self.knobs.tz_offset
            )))),
            _ => Err(ApiError::method_not_found()),
        }
    }

    fn crm_entity_method(&mut self, m: &str, p: &Param, now: Now) -> Result<Step, ApiError> {
        let mut parts = m.split('.').skip(1);
        let kind = parts
            .next()
            .and_then(EntityKind::parse)
            .ok_or_else(ApiError::method_not_found)?;
        let done = |r: Result<Value, ApiError>| r.map(|v| Step::Done(Output::of(v)));
        match parts.next() {
            Some("get") => done(crm::get(self, kind, p)),
            Some("list") => crm::list(self, kind, p).map(Step::Done),
            Some("update") => done(crm::update(self, kind, p, now)),
            _ => Err(ApiError::method_not_found()),
        }
    }

    fn event_method(&mut self, m: &str, caller: &Caller, p: &Param) -> Result<Value, ApiError> {
        match m {
            "event.bind" => events::bind(&mut self.events, caller, p),
            "event.unbind" => events::unbind(&mut self.events, caller, p),
            "event.get" => events::get(&self.events, caller),
            "event.offline.get" => {
                events::offline_get(&mut self.events, caller, p, self.knobs.tz_offset)
            }
            "event.offline.clear" => events::offline_clear(&mut self.events, caller, p),
            _ => Err(ApiError::method_not_found()),
        }
    }

    /// `app.info` as documented (bitrix24-rest.md has no page; the method's doc page lists
    /// ID as a string, CODE = the app's client_id, VERSION, STATUS, INSTALLED, PAYMENT_EXPIRED,
    /// DAYS, LICENSE): no `member_id`.
    fn app_info(&self, caller: &Caller) -> Value {
        let (id, code) = match &caller.owner {
            super::auth::Owner::App {
                app_id, client_id, ..
            } => (
                json!(app_id.to_string()),
                json!(self.knobs.app_code.as_ref().unwrap_or(client_id)),
            ),
            super::auth::Owner::Webhook { .. } => (Value::Null, Value::Null),
        };
        json!({
            "ID": id, "CODE": code, "VERSION": 1, "STATUS": "L", "INSTALLED": true,
            "PAYMENT_EXPIRED": "N", "DAYS": null, "LICENSE": "ru_project",
        })
    }
}
