//! Bitrix24: REST client, auth, rate limiter, batcher, durable outbox and inbound events
//! (DESIGN.md §5). Filled by the Bitrix24 issue.
