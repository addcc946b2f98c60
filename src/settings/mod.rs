//! The operator's settings model (`shared/seed/SETTINGS.md`), with the JSON of DESIGN.md §6.
//!
//! Portals (credentials), per-portal settings, employee mappings and lines. Everything here is
//! plain data plus validation: parse, don't validate — a value of these types that came through
//! [`validate`] is known good. Errors name the JSON path of the field (`incoming.default_responsible`,
//! `trusted_pbx[1]`) so the API and the settings page can show them next to the field.
//! Depends only on `phone` (line numbers) and `config` (`Secret`).

mod domain;
mod model;
mod validate;

pub use domain::{checked_base_url, normalize_domain, normalize_webhook_url, realm_of, DomainError};
pub use model::*;
pub use validate::{check_line, check_mapping, check_settings, parse_cidr, portal_from_input, FieldError, FieldErrors};
