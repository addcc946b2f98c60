//! `user.get` (scopes `user`, `user_basic` or `user_brief`): the portal's employees, 50 per page.
//! `ACTIVE` is a boolean here (`"Y"` elsewhere); the extension is `UF_PHONE_INNER`. Bots, e-mail
//! and open-channel users are never returned.

use serde_json::Value;

use crate::methods::Method;
use crate::{Error, ListPage, Params, Response};

/// `user.get`: one page of users from `start`. Result: the rows as JSON (decode each as
/// [`User`](crate::User)), `total` and `next`.
#[derive(Debug, Clone, PartialEq)]
pub struct UserGet {
    /// `FILTER` (`{"ACTIVE": "true"}`, `{"UF_PHONE_INNER": "101"}`); empty: none.
    pub filter: Params,
    /// `sort` field and `order` (`ASC`/`DESC`).
    pub sort: Option<(String, String)>,
    /// The offset (a multiple of 50; the previous page's `next`).
    pub start: u64,
}

impl UserGet {
    /// Active users, ordered by ascending `ID` (stable offsets).
    pub fn active() -> Self {
        Self {
            filter: Params::new().set("ACTIVE", "true"),
            sort: Some(("ID".to_owned(), "ASC".to_owned())),
            start: 0,
        }
    }
}

impl UserGet {
    /// The method's name.
    pub const METHOD: &'static str = "user.get";
}

impl Method for UserGet {
    type Output = ListPage<Value>;

    fn name(&self) -> &'static str {
        Self::METHOD
    }

    fn params(&self) -> Params {
        let mut p = Params::new();
        if !self.filter.is_empty() {
            p = p.set_map("FILTER", self.filter.clone());
        }
        if let Some((field, order)) = &self.sort {
            p = p.set("sort", field.as_str()).set("order", order.as_str());
        }
        p.set("start", self.start)
    }

    fn decode(resp: Response) -> Result<ListPage<Value>, Error> {
        resp.into_page()
    }
}
