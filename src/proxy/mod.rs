//! The stateful, record-routing edge proxy between the PBX and agents' SIP phones (RFC 3261 §16),
//! feeding signalling events into `calls`. Filled by the call-tracking issue.
