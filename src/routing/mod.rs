//! Personal-manager routing (DESIGN.md §4): the decision. [`decide`] turns a caller, a line and
//! the [`crate::directory`] into a [`Decision`], for the SIP redirect listener
//! ([`RedirectServer`]: a 302 to the manager's extension) and the HTTP `/api/v1/route` alike;
//! `audit` keeps the last decisions for the admin API, `metrics` counts them.
//!
//! Nothing here waits on Bitrix24 or the disk: the directory is a snapshot and the index a table
//! of integers. Depends on `directory`, `phone`, `settings` (types), `sip` and `calls` (a 302
//! tells the tracker who the call's manager is).

mod audit;
mod decide;
mod metrics;
mod redirect;

pub use audit::{CallIdText, DecisionLog, DecisionRecord};
pub use decide::{decide, Decision, Reason};
pub use redirect::{RedirectConfig, RedirectServer};
