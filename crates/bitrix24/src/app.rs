//! `app.info`: the application (or webhook) the credentials belong to. A cheap call that proves
//! a token or webhook works.

use serde_json::Value;

use crate::methods::method;
use crate::Params;

/// `app.info`. Result: the JSON object (`ID`, `CODE`, `VERSION`, `STATUS`, `INSTALLED`, …).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppInfo;

impl AppInfo {
    fn to_params(self) -> Params {
        Params::new()
    }
}

method!(AppInfo, "app.info", Value);
