//! Cross-module tests: the RFC 4475 torture messages and the no-panic mutation sweep.
//! Per-concept unit tests live next to their code (`#[cfg(test)] mod tests`).

mod rfc4475;
mod robustness;
