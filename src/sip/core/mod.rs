//! Sans-IO SIP core. Filled by the routing issue.
