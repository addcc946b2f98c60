//! SIP transports: UDP and TCP listeners. Filled by the routing issue.
