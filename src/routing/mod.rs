//! Personal-manager routing (DESIGN.md §4): pure number normalisation, the in-memory
//! [`Directory`] (portals, mappings, lines and the personal-manager index) and `decide()`.
//!
//! Nothing here waits on Bitrix24 or the disk on the hot path: the directory is an immutable
//! snapshot swapped atomically after every settings change, and the index is a `DashMap` of
//! plain integers. Depends on `settings` (types) and `store` (reload, snapshot persistence).

mod audit;
mod decide;
mod directory;
mod index;
mod metrics;
mod redirect;

pub use audit::{CallIdText, DecisionLog, DecisionRecord};
pub use decide::{decide, Decision, Reason};
pub use directory::{Directory, PortalEntry, Redirect, Snapshot};
pub use index::{parse_csv, BadRow, PmIndex};
pub use redirect::{RedirectConfig, RedirectServer};
