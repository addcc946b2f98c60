//! `decide()`: the personal-manager decision of DESIGN.md §4, pure and allocation-free.

use serde::Serialize;

use crate::directory::PortalEntry;
use crate::phone::Number;
use crate::settings::{Mapping, UserId};

/// Why a decision came out as it did (the audit and `/metrics` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Routed to the caller's personal manager.
    PersonalManager,
    /// No portal could be found for the called line.
    UnknownPortal,
    /// The portal's integration is off.
    Inactive,
    /// "Forward to the personal manager" is off.
    ForwardingOff,
    /// The caller has no usable number (anonymous, an extension).
    NoCallerNumber,
    /// The number is not in the index: no CRM entity owns it.
    NotInIndex,
    /// The responsible user is mapped to no extension.
    ManagerUnmapped,
    /// The manager's mapping has "use for personal-manager lookup" off.
    ManagerExcluded,
    /// The caller is the manager themself.
    CallerIsManager,
}

impl Reason {
    /// Every reason, for pre-registering metrics.
    pub const ALL: [Self; 9] = [
        Self::PersonalManager,
        Self::UnknownPortal,
        Self::Inactive,
        Self::ForwardingOff,
        Self::NoCallerNumber,
        Self::NotInIndex,
        Self::ManagerUnmapped,
        Self::ManagerExcluded,
        Self::CallerIsManager,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PersonalManager => "personal_manager",
            Self::UnknownPortal => "unknown_portal",
            Self::Inactive => "inactive",
            Self::ForwardingOff => "forwarding_off",
            Self::NoCallerNumber => "no_caller_number",
            Self::NotInIndex => "not_in_index",
            Self::ManagerUnmapped => "manager_unmapped",
            Self::ManagerExcluded => "manager_excluded",
            Self::CallerIsManager => "caller_is_manager",
        }
    }
}

/// The answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision<'a> {
    /// Send the call to this mapping's extension.
    Redirect {
        /// The manager's mapping.
        mapping: &'a Mapping,
    },
    /// No decision: the scenario goes on.
    NoDecision(Reason),
}

impl Decision<'_> {
    /// The reason (for a redirect, [`Reason::PersonalManager`]).
    pub fn reason(&self) -> Reason {
        match self {
            Self::Redirect { .. } => Reason::PersonalManager,
            Self::NoDecision(r) => *r,
        }
    }
}

/// Decides for a caller. `caller_user` is the raw From/PAI user part (to recognise a manager calling
/// from their own extension); `manager` is the index look-up result for `caller`.
pub fn decide<'a>(portal: Option<&'a PortalEntry>, caller: Option<Number>, caller_user: &[u8], manager: Option<UserId>) -> Decision<'a> {
    use Decision::NoDecision;
    let Some(p) = portal else { return NoDecision(Reason::UnknownPortal) };
    let s = &p.portal.settings;
    if !s.active {
        return NoDecision(Reason::Inactive);
    }
    if !s.incoming.forward_to_personal_manager {
        return NoDecision(Reason::ForwardingOff);
    }
    if caller.is_none() {
        return NoDecision(Reason::NoCallerNumber);
    }
    let Some(user) = manager else { return NoDecision(Reason::NotInIndex) };
    let Some(mapping) = p.by_user.get(&user) else { return NoDecision(Reason::ManagerUnmapped) };
    if !mapping.use_for_personal_manager {
        return NoDecision(Reason::ManagerExcluded);
    }
    if mapping.extension.as_bytes() == caller_user {
        return NoDecision(Reason::CallerIsManager);
    }
    Decision::Redirect { mapping }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::normalize_number;
    use crate::settings::{Portal, PortalSettings};

    fn entry(active: bool, forward: bool, mappings: &[(u64, &str, bool)]) -> PortalEntry {
        let mut settings = PortalSettings { active, ..Default::default() };
        settings.incoming.forward_to_personal_manager = forward;
        let portal = Portal { id: 1, name: None, domain: "https://a.bitrix24.ru/".into(), auth: None, settings };
        let maps = mappings
            .iter()
            .enumerate()
            .map(|(i, (u, e, pm))| Mapping { id: i as i64, user_id: *u, extension: (*e).into(), use_for_personal_manager: *pm, contact: None })
            .collect();
        PortalEntry::build(portal, maps, Vec::new())
    }

    #[test]
    fn table() {
        let caller = normalize_number("+79161234567");
        let on = entry(true, true, &[(5, "101", true), (6, "102", false)]);
        type Case<'a> = (&'a str, Option<&'a PortalEntry>, Option<Number>, &'a [u8], Option<UserId>, Reason);
        let cases: Vec<Case<'_>> = vec![
            ("routed", Some(&on), caller, b"79161234567", Some(5), Reason::PersonalManager),
            ("no portal", None, caller, b"", Some(5), Reason::UnknownPortal),
            ("anonymous", Some(&on), None, b"anonymous", Some(5), Reason::NoCallerNumber),
            ("unknown caller", Some(&on), caller, b"", None, Reason::NotInIndex),
            ("manager not mapped", Some(&on), caller, b"", Some(77), Reason::ManagerUnmapped),
            ("mapping without the flag", Some(&on), caller, b"", Some(6), Reason::ManagerExcluded),
            ("manager calls themself", Some(&on), caller, b"101", Some(5), Reason::CallerIsManager),
        ];
        for (name, portal, caller, user, manager, want) in cases {
            assert_eq!(decide(portal, caller, user, manager).reason(), want, "{name}");
        }
        let off = entry(false, true, &[(5, "101", true)]);
        assert_eq!(decide(Some(&off), caller, b"", Some(5)).reason(), Reason::Inactive);
        let flag_off = entry(true, false, &[(5, "101", true)]);
        assert_eq!(decide(Some(&flag_off), caller, b"", Some(5)).reason(), Reason::ForwardingOff);
        match decide(Some(&on), caller, b"", Some(5)) {
            Decision::Redirect { mapping } => assert_eq!(mapping.extension, "101"),
            other => panic!("{other:?}"),
        }
    }
}
