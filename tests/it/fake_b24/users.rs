//! Users and notifications (bitrix24-rest.md §8): `user.get`, `profile`,
//! `im.notify.system.add`, `im.notify.personal.add`.

use serde_json::{json, Value};

use super::auth::Caller;
use super::envelope::{ApiError, Output};
use super::params::Param;
use super::query;

/// A portal user. `extension` is `UF_PHONE_INNER`.
#[derive(Clone, Debug)]
pub struct User {
    pub id: u64,
    pub name: String,
    pub last_name: String,
    pub active: bool,
    pub extension: Option<String>,
    pub personal_mobile: Option<String>,
    pub work_phone: Option<String>,
    /// OPENED, CLOSED, PAUSED, EXPIRED, UNAVAILABLE, NOT_INSTALLED (searchCrmEntities).
    pub timeman_status: String,
    pub admin: bool,
}

impl User {
    pub fn new(id: u64, name: &str, extension: Option<&str>) -> Self {
        Self {
            id,
            name: name.to_owned(),
            last_name: format!("User{id}"),
            active: true,
            extension: extension.map(str::to_owned),
            personal_mobile: None,
            work_phone: None,
            timeman_status: "OPENED".into(),
            admin: false,
        }
    }

    /// The `user.get` row: `ID` a string, `ACTIVE` a boolean, `UF_PHONE_INNER` absent when unset.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "ID": self.id.to_string(),
            "ACTIVE": self.active,
            "NAME": self.name,
            "LAST_NAME": self.last_name,
            "SECOND_NAME": "",
            "EMAIL": format!("user{}@example.com", self.id),
            "PERSONAL_MOBILE": self.personal_mobile.clone().unwrap_or_default(),
            "WORK_PHONE": self.work_phone.clone().unwrap_or_default(),
            "UF_DEPARTMENT": [1],
            "USER_TYPE": "employee",
            "IS_ONLINE": "N",
        });
        if let Some(ext) = self.extension.as_ref().filter(|e| !e.is_empty()) {
            v["UF_PHONE_INNER"] = json!(ext);
        }
        v
    }
}

/// A notification sent through `im.notify.*`.
#[derive(Clone, Debug)]
pub struct Notification {
    pub id: u64,
    pub user_id: u64,
    pub message: String,
    /// `personal.add` (from the caller) rather than `system.add`.
    pub personal: bool,
    pub tag: Option<String>,
    pub from_user: u64,
}

#[derive(Debug)]
pub struct Users {
    pub list: Vec<User>,
    pub notifications: Vec<Notification>,
    next_notification: u64,
}

impl Default for Users {
    fn default() -> Self {
        let mut admin = User::new(1, "Admin", None);
        admin.admin = true;
        let list = vec![
            admin,
            User::new(11, "Anna", Some("101")),
            User::new(12, "Boris", Some("102")),
            User::new(13, "Vera", Some("103")),
        ];
        Self {
            list,
            notifications: Vec::new(),
            next_notification: 1,
        }
    }
}

impl Users {
    pub fn get(&self, id: u64) -> Option<&User> {
        self.list.iter().find(|u| u.id == id)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut User> {
        self.list.iter_mut().find(|u| u.id == id)
    }

    pub fn active(&self, id: u64) -> Option<&User> {
        self.get(id).filter(|u| u.active)
    }

    /// The active user with this extension (telephony resolves only active users).
    pub fn active_by_extension(&self, ext: &str) -> Option<&User> {
        let ext = ext.trim();
        self.list
            .iter()
            .find(|u| u.active && !ext.is_empty() && u.extension.as_deref() == Some(ext))
    }

    pub fn upsert(&mut self, user: User) {
        match self.get_mut(user.id) {
            Some(u) => *u = user,
            None => self.list.push(user),
        }
    }
}

/// Keys of `user.get` that are not (legacy top-level) filter fields.
const CONTROL: &[&str] = &[
    "sort",
    "order",
    "start",
    "select",
    "admin_mode",
    "filter",
    "auth",
    "access_token",
];

/// `user.get`: FILTER/filter (or legacy top-level fields), sort/order, start, select.
pub fn user_get(users: &Users, p: &Param) -> Result<Output, ApiError> {
    let filter = match p.get_any(&["FILTER", "filter", "Filter"]) {
        Some(f) => f.clone(),
        None => Param::Map(
            p.entries()
                .into_iter()
                .filter(|(k, _)| !CONTROL.contains(&k.to_ascii_lowercase().as_str()))
                .map(|(k, v)| (k, v.clone()))
                .collect(),
        ),
    };
    let mut rows: Vec<Value> = users
        .list
        .iter()
        .map(User::to_json)
        .filter(|row| query::matches(row, &filter))
        .collect();
    let sort = p
        .get_any(&["sort", "SORT"])
        .and_then(Param::nonempty)
        .unwrap_or_else(|| "ID".into());
    let desc = p
        .get_any(&["order", "ORDER"])
        .and_then(Param::text)
        .is_some_and(|o| o.eq_ignore_ascii_case("desc"));
    query::sort(&mut rows, &[(sort.to_uppercase(), desc)]);
    let select = query::select_list(p.get_any(&["select", "SELECT"]));
    let rows = rows
        .into_iter()
        .map(|r| query::project(r, &select, &[]))
        .collect();
    Ok(query::page(rows, p.get_any(&["start", "START"])))
}

/// `profile`: the caller's user.
pub fn profile(users: &Users, caller: &Caller) -> Value {
    let u = users.get(caller.user_id);
    json!({
        "ID": caller.user_id.to_string(),
        "ADMIN": u.is_some_and(|u| u.admin),
        "NAME": u.map(|u| u.name.clone()).unwrap_or_default(),
        "LAST_NAME": u.map(|u| u.last_name.clone()).unwrap_or_default(),
        "PERSONAL_GENDER": "",
        "TIME_ZONE": "",
    })
}

/// `im.notify.system.add` / `im.notify.personal.add` → the notification id.
pub fn notify(
    users: &mut Users,
    caller: &Caller,
    p: &Param,
    personal: bool,
) -> Result<Value, ApiError> {
    let user_id = p.get("USER_ID").and_then(Param::as_u64).unwrap_or(0);
    if user_id == 0 {
        return Err(ApiError::new(
            400,
            "USER_ID_EMPTY",
            "User ID can't be empty",
        ));
    }
    let message = p
        .get("MESSAGE")
        .and_then(Param::nonempty)
        .unwrap_or_default();
    if message.is_empty() {
        return Err(ApiError::new(
            400,
            "MESSAGE_EMPTY",
            "Message can't be empty",
        ));
    }
    let attach_len = p.get("ATTACH").map_or(0, |a| {
        a.text().unwrap_or_else(|| a.to_json().to_string()).len()
    });
    if attach_len > 60_000 {
        return Err(ApiError::new(
            400,
            "ATTACH_OVERSIZE",
            "You have exceeded the maximum allowable size of attach",
        ));
    }
    let id = users.next_notification;
    users.next_notification += 1;
    users.notifications.push(Notification {
        id,
        user_id,
        message,
        personal,
        tag: p.get("TAG").and_then(Param::nonempty),
        from_user: caller.user_id,
    });
    Ok(json!(id))
}
