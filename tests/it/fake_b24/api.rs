//! The assertion and seeding half of the `FakeB24` API: records, telephony state, CRM, users,
//! notifications and events.

use std::time::Duration;

use super::crm::{normalize_phone, CrmEntity, EntityKind};
use super::events::{self, post_form, Binding, Delivered};
use super::record::Recorded;
use super::server::spawn_deliveries;
use super::telephony::{self, CallState};
use super::users::{Notification, User};
use super::{AppInstall, FakeB24, Line};

impl FakeB24 {
    // ---- records --------------------------------------------------------------------------

    /// Every REST HTTP request, in the order they were answered (`at` is the arrival time);
    /// batch sub-calls are inside `sub_calls`.
    pub fn requests(&self) -> Vec<Recorded> {
        self.with(|s| s.log.clone())
    }

    /// Method calls flattened: a batch contributes its sub-calls (including ones refused with
    /// ERROR_BATCH_LENGTH_EXCEEDED), a batch that failed as a whole contributes itself, every
    /// other request contributes itself (also when it failed: filter with `ok()`).
    pub fn calls(&self) -> Vec<Recorded> {
        self.with(|s| {
            let mut out = Vec::new();
            for r in &s.log {
                if r.method == "batch" && !r.sub_calls.is_empty() {
                    out.extend(r.sub_calls.iter().cloned());
                } else {
                    out.push(r.clone());
                }
            }
            out
        })
    }

    /// Successful calls of one method (lower-case name), direct or in batches.
    pub fn calls_of(&self, method: &str) -> Vec<Recorded> {
        let m = method.to_lowercase();
        self.calls()
            .into_iter()
            .filter(|c| c.method == m && c.ok())
            .collect()
    }

    /// Every attempt of one method, failed ones included.
    pub fn attempts_of(&self, method: &str) -> Vec<Recorded> {
        let m = method.to_lowercase();
        self.calls().into_iter().filter(|c| c.method == m).collect()
    }

    /// Forgets the request log (state is kept).
    pub fn clear_requests(&self) {
        self.with(|s| s.log.clear());
    }

    // ---- telephony ------------------------------------------------------------------------

    /// Every registered call (finished ones keep `finished: Some(..)`), in registration order.
    pub fn registered(&self) -> Vec<CallState> {
        self.with(|s| s.tel.calls.clone())
    }

    pub fn call_state(&self, call_id: &str) -> Option<CallState> {
        self.with(|s| s.tel.calls.iter().find(|c| c.call_id == call_id).cloned())
    }

    /// Unfinished calls.
    pub fn active_calls(&self) -> Vec<CallState> {
        self.with(|s| s.tel.calls.iter().filter(|c| c.active()).cloned().collect())
    }

    /// All external lines (every app/webhook).
    pub fn lines(&self) -> Vec<Line> {
        self.with(|s| s.tel.lines.clone())
    }

    /// Chat messages posted by finish: (user, CALL_ID).
    pub fn chat_messages(&self) -> Vec<(u64, String)> {
        self.with(|s| s.tel.chat.clone())
    }

    /// Simulates a click on a number in the CRM: Bitrix registers the call itself (TYPE 1,
    /// CRM_CREATE 1, SHOW 0, owned by `client_id`'s app) and fires ONEXTERNALCALLSTART to that
    /// app's handlers (online ones are POSTed in the background; see `wait_deliveries`).
    /// Returns the CALL_ID.
    pub fn click_to_call(
        &self,
        client_id: &str,
        user_id: u64,
        phone: &str,
        line: Option<&str>,
    ) -> String {
        let call_id = self.with(|s| {
            let caller = Self::app_caller(s, client_id);
            let mut pairs = vec![
                ("USER_ID", user_id.to_string()),
                ("PHONE_NUMBER", phone.to_owned()),
                ("TYPE", "1".into()),
                ("CRM_CREATE", "1".into()),
                ("SHOW", "0".into()),
            ];
            if let Some(l) = line {
                pairs.push(("LINE_NUMBER", l.to_owned()));
            }
            let now = s.now();
            let reg = telephony::register(s, &caller, &Self::param_map(&pairs), now)
                .expect("click-to-call registers");
            let call_id = reg["CALL_ID"].as_str().unwrap_or_default().to_owned();
            let data = click_data(&reg, user_id, phone, line);
            events::fire_for(
                s,
                "ONEXTERNALCALLSTART",
                data,
                &call_id,
                now,
                Some(client_id),
            );
            call_id
        });
        spawn_deliveries(&self.inner);
        call_id
    }

    // ---- CRM ------------------------------------------------------------------------------

    /// Adds a contact with one phone; returns its id (contacts start at 1001).
    pub fn add_contact(&self, phone: &str, assigned_by: u64) -> u64 {
        self.add_entity(EntityKind::Contact, phone, assigned_by)
    }

    /// Adds a lead; ids start at 2001.
    pub fn add_lead(&self, phone: &str, assigned_by: u64) -> u64 {
        self.add_entity(EntityKind::Lead, phone, assigned_by)
    }

    /// Adds a company; ids start at 3001.
    pub fn add_company(&self, phone: &str, assigned_by: u64) -> u64 {
        self.add_entity(EntityKind::Company, phone, assigned_by)
    }

    pub fn add_entity(&self, kind: EntityKind, phone: &str, assigned_by: u64) -> u64 {
        self.with(|s| {
            let now = s.now();
            s.crm.add(kind, phone, assigned_by, now)
        })
    }

    /// Changes an entity's responsible (no event; use `fire_crm_update` to notify).
    pub fn set_assigned(&self, kind: EntityKind, id: u64, assigned_by: u64) {
        self.with(|s| {
            if let Some(e) = s.crm.find_mut(kind, id) {
                e.assigned_by_id = assigned_by;
            }
        });
    }

    /// Fires ONCRM<KIND>UPDATE for an entity to bound handlers.
    pub fn fire_crm_update(&self, kind: EntityKind, id: u64) {
        self.with(|s| {
            let now = s.now();
            let event = format!("ONCRM{}UPDATE", kind.name());
            events::fire(
                s,
                &event,
                vec![("FIELDS[ID]".into(), id.to_string())],
                &format!("{}:{id}", kind.name()),
                now,
            );
        });
        spawn_deliveries(&self.inner);
    }

    pub fn leads(&self) -> Vec<CrmEntity> {
        self.with(|s| s.crm.of_kind(EntityKind::Lead))
    }

    pub fn contacts(&self) -> Vec<CrmEntity> {
        self.with(|s| s.crm.of_kind(EntityKind::Contact))
    }

    pub fn companies(&self) -> Vec<CrmEntity> {
        self.with(|s| s.crm.of_kind(EntityKind::Company))
    }

    pub fn entity(&self, kind: EntityKind, id: u64) -> Option<CrmEntity> {
        self.with(|s| s.crm.find(kind, id).cloned())
    }

    /// The fake's phone normalisation (digits, extension cut, Russian 8 → 7).
    pub fn normalize_phone(phone: &str) -> String {
        normalize_phone(phone)
    }

    // ---- users and notifications ----------------------------------------------------------

    pub fn users(&self) -> Vec<User> {
        self.with(|s| s.users.list.clone())
    }

    /// Adds or replaces a user.
    pub fn add_user(&self, user: User) {
        self.with(|s| s.users.upsert(user));
    }

    pub fn set_user_active(&self, id: u64, active: bool) {
        self.with(|s| s.users.get_mut(id).map(|u| u.active = active));
    }

    pub fn set_extension(&self, id: u64, extension: Option<&str>) {
        self.with(|s| {
            s.users
                .get_mut(id)
                .map(|u| u.extension = extension.map(str::to_owned))
        });
    }

    pub fn set_timeman_status(&self, id: u64, status: &str) {
        self.with(|s| {
            s.users
                .get_mut(id)
                .map(|u| u.timeman_status = status.to_owned())
        });
    }

    /// Notifications sent: (USER_ID, MESSAGE).
    pub fn notifications(&self) -> Vec<(u64, String)> {
        self.with(|s| {
            s.users
                .notifications
                .iter()
                .map(|n| (n.user_id, n.message.clone()))
                .collect()
        })
    }

    pub fn notification_log(&self) -> Vec<Notification> {
        self.with(|s| s.users.notifications.clone())
    }

    // ---- events ---------------------------------------------------------------------------

    /// POSTs one form-encoded event like Bitrix24: `event`, `event_handler_id`, `data[k]`
    /// (`"FIELDS[ID]"` → `data[FIELDS][ID]`), `ts`, `auth[k]`. Returns the HTTP status, 0 on a
    /// transport error.
    pub async fn emit_event(
        &self,
        url: &str,
        event: &str,
        data: &[(&str, &str)],
        auth: &[(&str, &str)],
    ) -> u16 {
        let pairs = events::event_pairs(event, 1, data, self.now_unix(), auth);
        self.emit_form(url, &pairs).await
    }

    /// POSTs arbitrary form pairs (for malformed or extra-key payloads).
    pub async fn emit_form(&self, url: &str, pairs: &[(String, String)]) -> u16 {
        post_form(&self.inner.http, url, pairs).await.unwrap_or(0)
    }

    /// The `auth[...]` pairs an app event carries (tokens included).
    pub fn app_event_auth(&self, app: &AppInstall) -> Vec<(String, String)> {
        vec![
            ("access_token".into(), app.access_token.clone()),
            ("expires".into(), app.expires.to_string()),
            ("expires_in".into(), app.expires_in.to_string()),
            ("scope".into(), app.scope.clone()),
            ("domain".into(), app.domain.clone()),
            ("server_endpoint".into(), app.server_endpoint.clone()),
            ("status".into(), "L".into()),
            ("client_endpoint".into(), app.client_endpoint.clone()),
            ("member_id".into(), app.member_id.clone()),
            ("user_id".into(), app.user_id.to_string()),
            ("refresh_token".into(), app.refresh_token.clone()),
            ("application_token".into(), app.application_token.clone()),
        ]
    }

    /// POSTs ONAPPINSTALL for `app` to its installation handler.
    pub async fn emit_install(&self, url: &str, app: &AppInstall) -> u16 {
        let auth = self.app_event_auth(app);
        let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let data = [
            ("VERSION", "1"),
            ("ACTIVE", "Y"),
            ("INSTALLED", "Y"),
            ("LANGUAGE_ID", "ru"),
        ];
        self.emit_event(url, "ONAPPINSTALL", &data, &auth).await
    }

    /// An outgoing webhook configured in the portal UI: these events are POSTed to `url` with
    /// `auth[application_token] = token` and no OAuth tokens.
    pub fn add_outgoing_webhook(&self, url: &str, events: &[&str], token: &str) {
        self.with(|s| s.events.add_outgoing_webhook(url, events, token));
    }

    /// Handlers bound with `event.bind` (and outgoing webhooks).
    pub fn bindings(&self) -> Vec<Binding> {
        self.with(|s| s.events.bindings.clone())
    }

    /// Online event handlers unreachable (callgate down): deliveries fail and are dropped, as
    /// Bitrix24 drops them; offline queues still fill.
    pub fn set_handlers_down(&self, down: bool) {
        self.with(|s| s.knobs.handlers_down = down);
    }

    /// Offline events fired from now on carry a `TIMESTAMP_X` this far in the past (they
    /// waited in the queue while callgate was down).
    pub fn set_offline_backdate(&self, d: Duration) {
        self.with(|s| s.knobs.offline_backdate = d);
    }

    /// Offline events queued for apps (taken by a reader or not): (event, process_id).
    pub fn offline_queue(&self) -> Vec<(String, Option<String>)> {
        self.with(|s| s.events.offline.iter().map(|e| (e.event.clone(), e.process_id.clone())).collect())
    }

    /// Automatic deliveries finished so far (status None = transport error, not retried).
    pub fn deliveries(&self) -> Vec<Delivered> {
        self.with(|s| s.events.delivered.clone())
    }

    /// Waits (up to 10 s, then panics) until at least `n` automatic deliveries finished.
    pub async fn wait_deliveries(&self, n: usize) -> Vec<Delivered> {
        let wait = async {
            loop {
                let notified = self.inner.delivered.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let got = self.deliveries();
                if got.len() >= n {
                    return got;
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("event deliveries in time")
    }
}

/// ONEXTERNALCALLSTART `data[...]` (§6.2) from a register result.
fn click_data(
    reg: &serde_json::Value,
    user_id: u64,
    phone: &str,
    line: Option<&str>,
) -> Vec<(String, String)> {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "0".into(),
        other => other.to_string(),
    };
    let entity_type = reg["CRM_ENTITY_TYPE"]
        .as_str()
        .filter(|t| !t.is_empty())
        .unwrap_or("LEAD");
    vec![
        ("PHONE_NUMBER".into(), phone.to_owned()),
        (
            "PHONE_NUMBER_INTERNATIONAL".into(),
            format!("+{}", normalize_phone(phone)),
        ),
        ("EXTENSION".into(), String::new()),
        ("USER_ID".into(), user_id.to_string()),
        ("CALL_LIST_ID".into(), "0".into()),
        ("LINE_NUMBER".into(), line.unwrap_or("").to_owned()),
        ("IS_MOBILE".into(), "0".into()),
        ("CALL_ID".into(), text(&reg["CALL_ID"])),
        ("CRM_ENTITY_TYPE".into(), entity_type.to_owned()),
        ("CRM_ENTITY_ID".into(), text(&reg["CRM_ENTITY_ID"])),
        ("CRM_CREATED_LEAD".into(), text(&reg["CRM_CREATED_LEAD"])),
    ]
}
