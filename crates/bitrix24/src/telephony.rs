//! Telephony methods (scope `telephony`): the external-PBX call lifecycle
//! `searchCrmEntities` → [`Register`] → [`Show`]/[`Hide`] → [`Finish`] → [`AttachRecord`].
//!
//! What Bitrix24 does with them, in short:
//! * `register` hands back an existing `CALL_ID` for an *unfinished* call of the same user, number
//!   and type from the last 30 minutes: pass a unique [`Register::external_call_id`] per physical
//!   call, and finish every registered call, answered or not.
//! * `finish` reassigns only the CRM entities *this call created* to its `USER_ID`; a second
//!   finish of one `CALL_ID` fails with [`Error::CallNotFound`].
//!   `ADD_TO_CHAT` has had different defaults over time, so it is always sent.
//! * `show`/`hide` are pure UI (the call card), `true` when the call is active.
//! * `attachRecord` works only after `finish` (before it: `CallNotFound` with another text).
//!
//! Every type here implements [`Method`] and can go into a `batch`; inside one,
//! a later command names an earlier `register`'s `CALL_ID` with [`CallId::Ref`].

use serde::Deserialize;

use crate::methods::{method, Method};
use crate::{Error, ListPage, ParamValue, Params, RegisterResult, Response, SearchEntity};

pub use crate::types::FinishResult;

/// `TYPE` of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CallType {
    /// 1: outgoing.
    Outgoing,
    /// 2: incoming.
    Incoming,
    /// 3: incoming, forwarded to a mobile or landline.
    IncomingRedirected,
    /// 4: callback.
    Callback,
    /// 5: informational (auto-call); newer portals only.
    Info,
}

impl CallType {
    /// The wire value.
    pub fn code(self) -> u8 {
        match self {
            Self::Outgoing => 1,
            Self::Incoming => 2,
            Self::IncomingRedirected => 3,
            Self::Callback => 4,
            Self::Info => 5,
        }
    }

    /// From the wire value.
    pub fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            1 => Self::Outgoing,
            2 => Self::Incoming,
            3 => Self::IncomingRedirected,
            4 => Self::Callback,
            5 => Self::Info,
            _ => return None,
        })
    }
}

/// Who a call belongs to: a user id, or an extension (`UF_PHONE_INNER`, active users only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallUser {
    /// `USER_ID`.
    Id(u64),
    /// `USER_PHONE_INNER`.
    Extension(String),
}

impl CallUser {
    fn set(&self, p: Params) -> Params {
        match self {
            Self::Id(id) => p.set("USER_ID", *id),
            Self::Extension(ext) => p.set("USER_PHONE_INNER", ext.as_str()),
        }
    }
}

/// A `CALL_ID`: known, or the result of an earlier `register` in the same `batch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallId {
    /// `externalCall.<hex>.<unix>`.
    Known(String),
    /// `$result[<key>][CALL_ID]`: the `register` command with this key.
    Ref(String),
}

impl CallId {
    fn value(&self) -> ParamValue {
        match self {
            Self::Known(id) => ParamValue::Str(id.clone()),
            Self::Ref(key) => Params::reference(key.clone(), "CALL_ID"),
        }
    }
}

impl From<&str> for CallId {
    fn from(id: &str) -> Self {
        Self::Known(id.to_owned())
    }
}

impl From<String> for CallId {
    fn from(id: String) -> Self {
        Self::Known(id)
    }
}

/// `telephony.externalcall.register`: a call starts. Result: [`RegisterResult`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    /// The employee the call belongs to.
    pub user: CallUser,
    /// The customer's number (letters are stripped by Bitrix24).
    pub phone_number: String,
    /// The call's direction.
    pub call_type: CallType,
    /// ISO 8601 with an offset (`2026-03-07T10:20:30+03:00`); Bitrix24's "now" when `None`.
    pub call_start_date: Option<String>,
    /// Create a lead when nothing in the CRM has this number.
    pub crm_create: bool,
    /// `CRM_SOURCE` of a created lead (`CALL`, `WEB`, …).
    pub crm_source: Option<String>,
    /// Bind to this entity instead of searching by number: (`CONTACT`/`COMPANY`/`LEAD`, id).
    pub crm_entity: Option<(String, u64)>,
    /// Show the call card to the user now (Bitrix24's default: yes).
    pub show: Option<bool>,
    /// The external line (number) the call came in on or went out through.
    pub line_number: Option<String>,
    /// The PBX's id of the physical call: makes every call a new Bitrix24 call.
    pub external_call_id: Option<String>,
    /// A CRM call list (from `ONEXTERNALCALLSTART`).
    pub call_list_id: Option<u64>,
}

impl Register {
    /// A call of `user` with `phone_number`, everything else unset.
    pub fn new(user: CallUser, phone_number: impl Into<String>, call_type: CallType) -> Self {
        Self {
            user,
            phone_number: phone_number.into(),
            call_type,
            call_start_date: None,
            crm_create: false,
            crm_source: None,
            crm_entity: None,
            show: None,
            line_number: None,
            external_call_id: None,
            call_list_id: None,
        }
    }

    fn to_params(&self) -> Params {
        let p = self
            .user
            .set(Params::new())
            .set("PHONE_NUMBER", self.phone_number.as_str())
            .set("TYPE", self.call_type.code())
            .set("CRM_CREATE", u8::from(self.crm_create))
            .set_opt("CRM_SOURCE", self.crm_source.clone())
            .set_opt("SHOW", self.show.map(u8::from))
            .set_opt("EXTERNAL_CALL_ID", self.external_call_id.clone())
            .set_opt("CALL_START_DATE", self.call_start_date.clone())
            .set_opt("LINE_NUMBER", self.line_number.clone())
            .set_opt("CALL_LIST_ID", self.call_list_id);
        match &self.crm_entity {
            Some((kind, id)) => p
                .set("CRM_ENTITY_TYPE", kind.as_str())
                .set("CRM_ENTITY_ID", *id),
            None => p,
        }
    }
}

method!(Register, "telephony.externalcall.register", RegisterResult);

/// `telephony.externalcall.finish`: a call ended. Result: [`FinishResult`].
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    /// The call.
    pub call_id: CallId,
    /// Who ended it: the talker, or who is responsible for a missed call (becomes the
    /// responsible user of the CRM entities this call created).
    pub user: CallUser,
    /// Talk seconds (0: not answered).
    pub duration: u64,
    /// `200`, `304` (missed), `603-S` (cancelled), `486` (busy), …; Bitrix24's default is `200`
    /// when `duration > 0`, else `304`.
    pub status_code: Option<String>,
    /// Post a message about the call to the employee's chat (always sent: its default changed).
    pub add_to_chat: bool,
    /// Free text.
    pub failed_reason: Option<String>,
    /// Cost and its currency (`RUB`, `USD`).
    pub cost: Option<(f64, String)>,
    /// Rating 1..5.
    pub vote: Option<u8>,
}

impl Finish {
    /// A finish of `call_id` by `user` with `duration` talk seconds; no chat message.
    pub fn new(call_id: impl Into<CallId>, user: CallUser, duration: u64) -> Self {
        Self {
            call_id: call_id.into(),
            user,
            duration,
            status_code: None,
            add_to_chat: false,
            failed_reason: None,
            cost: None,
            vote: None,
        }
    }

    fn to_params(&self) -> Params {
        let p = self
            .user
            .set(Params::new().set("CALL_ID", self.call_id.value()))
            .set("DURATION", self.duration)
            .set_opt("STATUS_CODE", self.status_code.clone())
            .set("ADD_TO_CHAT", u8::from(self.add_to_chat))
            .set_opt("FAILED_REASON", self.failed_reason.clone())
            .set_opt("VOTE", self.vote);
        match &self.cost {
            Some((cost, currency)) => p.set("COST", *cost).set("COST_CURRENCY", currency.as_str()),
            None => p,
        }
    }
}

method!(Finish, "telephony.externalcall.finish", FinishResult);

/// `telephony.externalcall.show`: shows the call card to users. Result: `true` when the call is
/// active, `false` otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Show {
    /// The call.
    pub call_id: CallId,
    /// The users (empty: the call's own user).
    pub users: Vec<u64>,
}

/// `telephony.externalcall.hide`: hides the call card. Result as [`Show`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hide {
    /// The call.
    pub call_id: CallId,
    /// The users (empty: the call's own user).
    pub users: Vec<u64>,
}

fn card_params(call_id: &CallId, users: &[u64]) -> Params {
    let p = Params::new().set("CALL_ID", call_id.value());
    if users.is_empty() {
        p
    } else {
        p.set_list("USER_ID", users.iter().copied())
    }
}

impl Show {
    fn to_params(&self) -> Params {
        card_params(&self.call_id, &self.users)
    }
}

impl Hide {
    fn to_params(&self) -> Params {
        card_params(&self.call_id, &self.users)
    }
}

method!(Show, "telephony.externalcall.show", bool);
method!(Hide, "telephony.externalcall.hide", bool);

/// `telephony.externalCall.attachRecord`: a finished call's recording (wav or mp3, lowercase
/// extension). Result: [`AttachRecordResult`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRecord {
    /// The (finished) call.
    pub call_id: CallId,
    /// `call.mp3`.
    pub filename: String,
    /// What to attach.
    pub source: RecordSource,
}

/// Where the recording of an [`AttachRecord`] comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordSource {
    /// The file, base64-encoded, in the request.
    Content(String),
    /// Nothing now: Bitrix24 answers an `uploadUrl` to POST the file to (multipart field `file`).
    Upload,
    /// Bitrix24 downloads it from this URL, once, synchronously.
    Url(String),
}

impl AttachRecord {
    fn to_params(&self) -> Params {
        let p = Params::new()
            .set("CALL_ID", self.call_id.value())
            .set("FILENAME", self.filename.as_str());
        match &self.source {
            RecordSource::Content(b64) => p.set("FILE_CONTENT", b64.as_str()),
            RecordSource::Upload => p,
            RecordSource::Url(url) => p.set("RECORD_URL", url.as_str()),
        }
    }
}

method!(
    AttachRecord,
    "telephony.externalcall.attachrecord",
    AttachRecordResult
);

/// The result of [`AttachRecord`]: the file's id, or where to upload it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AttachRecordResult {
    /// The Drive file id (content or URL given).
    #[serde(
        rename = "FILE_ID",
        default,
        deserialize_with = "crate::types::lenient::opt_id"
    )]
    pub file_id: Option<u64>,
    /// Where to POST the file ([`RecordSource::Upload`]).
    #[serde(rename = "uploadUrl", default)]
    pub upload_url: Option<String>,
    /// The multipart field name for the upload (`file`).
    #[serde(rename = "fieldName", default)]
    pub field_name: Option<String>,
}

/// `telephony.externalCall.searchCrmEntities`: the CRM entities with a number, contacts first.
/// Result: the entities (possibly none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchCrmEntities {
    /// The number, as the CRM may hold it (`+79161234567`).
    pub phone_number: String,
}

impl SearchCrmEntities {
    /// The method's name.
    pub const METHOD: &'static str = "telephony.externalcall.searchcrmentities";
}

impl Method for SearchCrmEntities {
    type Output = Vec<SearchEntity>;

    fn name(&self) -> &'static str {
        Self::METHOD
    }

    fn params(&self) -> Params {
        Params::new().set("PHONE_NUMBER", self.phone_number.as_str())
    }

    fn decode(resp: Response) -> Result<Vec<SearchEntity>, Error> {
        ListPage::decode(resp.result, None, None).map(|p| p.items)
    }
}
